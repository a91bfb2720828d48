/// What an operator can do to a job from outside its runner.
public enum JobCommand: String, Sendable, CaseIterable {
    case pause, resume, cancel, forget
}

/// The job's lifecycle as a transition table: which operator command is allowed from which
/// state, and what it leads to. Pure; `CheckpointStore.apply` carries out its decisions under
/// the job row's lock.
///
/// ```
/// pending ──run──► running ──► done | failed | paused | cancelled | pending (stopped: time box, signal)
/// pause:   pending, running          → paused
/// resume:  paused                    → pending
/// cancel:  pending, running, paused, failed → cancelled   (runs again only with --restart)
/// forget:  done, failed, cancelled   → the record is removed
///
/// running ──walked and verified──► finalizing ──every step──► done
///                                      └──a step failed──► failed (a rerun retries from that step)
///
/// revert:  done, failed, cancelled, pending, reverting → reverting ──journal walked──► reverted
/// pause, cancel: reverting → paused, cancelled (a later `revert` goes on from its checkpoint)
/// forget:  reverted → the record and its journal are removed
/// ```
public enum JobLifecycle {
    /// The outcome of a command in a state.
    public enum Decision: Sendable, Hashable {
        /// The job moves to this state.
        case to(JobState)
        /// The job's record is removed.
        case remove
        /// Not allowed; the reason and what to do instead, for people.
        case refuse(String)
    }

    public static func decide(_ command: JobCommand, from state: JobState) -> Decision {
        switch (command, state) {
        case (.pause, .pending), (.pause, .running): .to(.paused)
        case (.pause, .paused): .refuse("is already paused; `backfill resume` lets it run again")
        case (.pause, .done): .refuse("is done: there is nothing to pause")
        case (.pause, .failed): .refuse("has failed and is not running: fix the cause and run it again, or cancel it")
        case (.pause, .cancelled): .refuse("is cancelled: it runs again only with `run --restart`")
        case (.pause, .finalizing): .refuse("is finalizing: its finalize steps run to the end or fail; `backfill wait` follows it, `backfill cancel` stops it before its next step")
        case (.pause, .reverting): .to(.paused)
        case (.pause, .reverted): .refuse("is reverted: there is nothing to pause")

        case (.resume, .paused): .to(.pending)
        case (.resume, .pending), (.resume, .running), (.resume, .finalizing), (.resume, .reverting), (.resume, .reverted): .refuse("is not paused")
        case (.resume, .done): .refuse("is done: there is nothing to resume")
        case (.resume, .failed): .refuse("has failed, it is not paused: run it again to retry from its checkpoint")
        case (.resume, .cancelled): .refuse("was cancelled, not paused: `run --restart` starts it over from the first key")

        case (.cancel, .pending), (.cancel, .running), (.cancel, .paused), (.cancel, .failed), (.cancel, .finalizing), (.cancel, .reverting): .to(.cancelled)
        case (.cancel, .reverted): .refuse("is reverted: there is nothing to cancel (`backfill forget` removes its record)")
        case (.cancel, .done): .refuse("is done: there is nothing to cancel (`backfill forget` removes its record)")
        case (.cancel, .cancelled): .refuse("is already cancelled")

        case (.forget, .done), (.forget, .failed), (.forget, .cancelled), (.forget, .reverted): .remove
        case (.forget, .reverting): .refuse("is being reverted, or its revert was stopped: run `backfill revert` again to finish it, or cancel it first")
        case (.forget, .running), (.forget, .finalizing): .refuse("is running: stop or cancel it first, then forget it")
        case (.forget, .pending), (.forget, .paused): .refuse("is not finished: cancel it first if it should never run again")
        }
    }

    /// What `backfill revert` does.
    public enum RevertStep: String, Sendable, CaseIterable {
        /// A revert starts, or goes on from its checkpoint.
        case starts
        /// The whole journal is walked.
        case finishes
    }

    /// The state a revert step leads to from `state`, or why it may not happen.
    public static func decide(_ step: RevertStep, from state: JobState) -> Decision {
        switch (step, state) {
        case (.starts, .done), (.starts, .failed), (.starts, .cancelled), (.starts, .pending), (.starts, .reverting): .to(.reverting)
        case (.starts, .running), (.starts, .finalizing): .refuse("is running: stop it first (`backfill pause` or `backfill cancel`, or let it finish), then revert it")
        case (.starts, .paused): .refuse("is paused: `backfill resume` it (it does not run by itself), then revert it")
        case (.starts, .reverted): .refuse("is already reverted")
        case (.finishes, .reverting): .to(.reverted)
        case (.finishes, let other): .refuse("is \(other.rawValue), not reverting")
        }
    }

    /// What the run itself does once every key is walked and no row still matches `where`.
    public enum RunStep: String, Sendable, CaseIterable {
        /// The job's `finalize` statements start.
        case finalizeStarts
        /// Every finalize step is recorded done.
        case finalizeDone
        /// A finalize step failed for good.
        case finalizeFailed
    }

    /// The state a run step leads to from `state`, or why it may not happen (a job cancelled or
    /// paused by an operator meanwhile keeps that state).
    public static func decide(_ step: RunStep, from state: JobState) -> Decision {
        switch (step, state) {
        case (.finalizeStarts, .running), (.finalizeStarts, .finalizing): .to(.finalizing)
        case (.finalizeDone, .finalizing): .to(.done)
        case (.finalizeFailed, .finalizing): .to(.failed)
        case (_, .cancelled): .refuse("was cancelled: its finalize steps do not run; `run --restart` starts it over")
        case (_, .paused): .refuse("was paused: `backfill resume`, then run it again to finalize")
        case (.finalizeStarts, let other): .refuse("is \(other.rawValue), not running: only a run that walked every key finalizes")
        case (_, let other): .refuse("is \(other.rawValue), not finalizing")
        }
    }
}
