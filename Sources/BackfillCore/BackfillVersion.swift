/// The version `backfill --version` prints, and the one `scripts/package-deb` gives the package.
public enum BackfillVersion {
    public static let current = "0.1.0"
}
