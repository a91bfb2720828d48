// swift-tools-version:6.1
import PackageDescription

// Linux only (built and tested on Debian 12): LocalPostgres and the tests use Glibc's process,
// socket and /proc interfaces, so no Apple platform is claimed here. Dependencies are pinned
// with `exact:`; Package.resolved stays out of git.
let package = Package(
    name: "Backfill",
    products: [
        .executable(name: "backfill", targets: ["backfill"]),
        .library(name: "BackfillCore", targets: ["BackfillCore"]),
        .library(name: "PostgresClient", targets: ["PostgresClient"]),
        .library(name: "LocalPostgres", targets: ["LocalPostgres"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", exact: "0.2.0"),
        .package(url: "https://github.com/apple/swift-log", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", exact: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", exact: "2.4.1"),
        .package(url: "https://github.com/x-sheep/swift-property-based", exact: "2.0.1"),
        .package(url: "https://github.com/JohnSundell/Plot", exact: "0.14.0"),
        .package(url: "https://github.com/pointfreeco/swift-snapshot-testing", exact: "1.19.7"),
    ],
    targets: [
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .target(name: "PostgresClient", dependencies: ["CLibPQ"]),
        .target(name: "LocalPostgres", dependencies: ["PostgresClient"]),
        .target(
            name: "BackfillCore",
            dependencies: [
                "PostgresClient",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Plot", package: "Plot"),
            ]
        ),
        .executableTarget(
            name: "backfill",
            dependencies: [
                "BackfillCore", "LocalPostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "backfill-bench",
            dependencies: [
                "BackfillCore", "LocalPostgres", "PostgresClient",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            path: "benchmarks/Sources/backfill-bench"
        ),
        // Test-only helpers (fresh databases per test); not a product, so nothing here ships.
        .target(name: "BackfillTestSupport", dependencies: ["LocalPostgres", "PostgresClient"], path: "Tests/BackfillTestSupport"),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "LocalPostgres", "BackfillTestSupport"]),
        .testTarget(
            name: "BackfillCoreTests",
            dependencies: [
                "BackfillCore",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "SnapshotTesting", package: "swift-snapshot-testing"),
            ],
            exclude: ["__Snapshots__"]
        ),
        .testTarget(
            name: "BackfillIntegrationTests",
            dependencies: [
                "BackfillCore", "LocalPostgres", "PostgresClient", "BackfillTestSupport",
                .product(name: "Yams", package: "Yams"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
