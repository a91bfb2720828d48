/// The version `backfill --version` prints.
public enum BackfillVersion {
    public static let current = "0.1.0"
}
