import Foundation

extension JobSpec {
    /// Reads and validates a job file from disk.
    public static func load(path: String) throws(JobFileError) -> JobSpec {
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw JobFileError(
                file: path, field: nil, problem: exists ? "cannot be read" : "does not exist",
                fix: exists ? "check the file's permissions" : "check the path (relative paths start from \(FileManager.default.currentDirectoryPath))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw JobFileError(file: path, field: nil, problem: "is not UTF-8 text", fix: "save the job file as UTF-8")
        }
        return try parse(yaml: text, file: path)
    }
}
