// swift-tools-version:6.1
import PackageDescription

let package = Package(
    name: "Backfill",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "backfill", targets: ["backfill"]),
        .library(name: "BackfillCore", targets: ["BackfillCore"]),
        .library(name: "PostgresClient", targets: ["PostgresClient"]),
        .library(name: "LocalPostgres", targets: ["LocalPostgres"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", exact: "1.8.2"),
        .package(url: "https://github.com/jpsim/Yams", exact: "6.2.2"),
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
            dependencies: ["PostgresClient", .product(name: "Yams", package: "Yams")]
        ),
        .executableTarget(
            name: "backfill",
            dependencies: [
                "BackfillCore", "LocalPostgres",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(name: "PostgresClientTests", dependencies: ["PostgresClient", "LocalPostgres"]),
        .testTarget(name: "BackfillCoreTests", dependencies: ["BackfillCore"]),
        .testTarget(
            name: "BackfillIntegrationTests",
            dependencies: ["BackfillCore", "LocalPostgres", "PostgresClient"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
