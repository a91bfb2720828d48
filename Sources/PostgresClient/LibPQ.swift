import CLibPQ

/// Facts about the libpq library this process runs with.
public enum LibPQ {
    /// The version of the libpq loaded at run time (`PQlibVersion`, not the headers built
    /// against): `15.18`, or `9.6.24` before PostgreSQL 10.
    public static var version: String { versionText(Int(PQlibVersion())) }

    /// `150018` → `15.18`; `90624` → `9.6.24`.
    static func versionText(_ number: Int) -> String {
        number >= 100_000 ? "\(number / 10_000).\(number % 10_000)" : "\(number / 10_000).\(number / 100 % 100).\(number % 100)"
    }
}
