//! `outpost rollout history pod NAME`: a pod's revisions under safe updates, read from the
//! state database (the agent keeps the history there, not in the API's snapshot).

use std::io::Write;
use std::path::PathBuf;

use super::{ClientError, Result, TabWriter};
use crate::store::{RevisionRecord, Store, DATABASE};

#[derive(Debug, clap::Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum RolloutCommand {
    /// List a pod's revisions: when each was rolled out, its hash (the pod's
    /// kubernetes.io/config.hash) and how it ended (Pending, Ready, Failed with the reason,
    /// Superseded by another edit during its health gate).
    History {
        /// The kind: pod (pods, po).
        #[arg(value_name = "KIND", value_parser = ["pod", "pods", "po"])]
        kind: String,
        #[arg(value_name = "NAME")]
        name: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// outpost's state directory (the agent's --state).
        #[arg(long, value_name = "DIR", default_value = "/var/lib/outpost", env = "OUTPOST_STATE")]
        state: PathBuf,
    },
}

pub fn rollout(args: &RolloutArgs, out: &mut dyn Write) -> Result<()> {
    let RolloutCommand::History { name, namespace, state, .. } = &args.command;
    let db = state.join(DATABASE);
    if !db.is_file() {
        return Err(ClientError::NoState { path: db });
    }
    let store = Store::open(&db).map_err(|e| ClientError::Store { message: e.to_string() })?;
    let rows = store
        .revisions(Some((namespace, name)))
        .map_err(|e| ClientError::Store { message: e.to_string() })?;
    if rows.is_empty() {
        return Err(ClientError::NoRevisions { pod: format!("{namespace}/{name}") });
    }
    out.write_all(history(&rows).as_bytes()).map_err(|source| ClientError::Output { source })
}

/// The table, oldest first.
pub fn history(rows: &[RevisionRecord]) -> String {
    let mut tw = TabWriter::new(0, 2);
    tw.write("REVISION\tTIME\tHASH\tRESULT\n");
    for (i, r) in rows.iter().enumerate() {
        let at = crate::engine::Timestamp::from_second(r.at).unwrap_or_default();
        let result = match &r.reason {
            Some(why) => format!("{} ({why})", r.result),
            None => r.result.clone(),
        };
        tw.write(&format!(
            "{}\t{at}\t{}\t{result}\n",
            i + 1,
            crate::engine::short_revision(&r.hash)
        ));
    }
    tw.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_lists_time_hash_and_result() {
        let row = |hash: &str, at, result: &str, reason: Option<&str>| RevisionRecord {
            namespace: "default".into(),
            name: "web".into(),
            hash: hash.into(),
            pod: "{}".into(),
            config: "{}".into(),
            at,
            result: result.into(),
            reason: reason.map(Into::into),
        };
        let rows = [
            row("1a2b3c4d-0000", 0, "Ready", None),
            row("5e6f7a8b-0000", 60, "Failed", Some("CrashLoopBackOff")),
        ];
        assert_eq!(
            history(&rows),
            "REVISION  TIME                  HASH      RESULT\n\
             1         1970-01-01T00:00:00Z  1a2b3c4d  Ready\n\
             2         1970-01-01T00:01:00Z  5e6f7a8b  Failed (CrashLoopBackOff)\n"
        );
    }
}
