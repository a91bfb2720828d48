import Foundation

extension JobSpec {
    /// Reads and validates a job file from disk.
    public static func load(path: String) throws(JobFileError) -> JobSpec {
        try parse(yaml: readText(path, kind: "job file"), file: path)
    }

    /// A file's text, or why it cannot be read (missing, unreadable, not UTF-8), for the job
    /// file and the targets file alike.
    static func readText(_ path: String, kind: String) throws(JobFileError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            let exists = FileManager.default.fileExists(atPath: path)
            throw JobFileError(
                file: path, field: nil, problem: exists ? "cannot be read" : "does not exist",
                fix: exists ? "check the file's permissions" : "check the path (relative paths start from \(FileManager.default.currentDirectoryPath))")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw JobFileError(file: path, field: nil, problem: "is not UTF-8 text", fix: "save the \(kind) as UTF-8")
        }
        return text
    }
}
