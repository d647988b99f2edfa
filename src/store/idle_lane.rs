//! One thread of the lowest CPU priority (Linux's `SCHED_IDLE`, and nice 19) for the redb
//! commits nobody waits on: the usage rows of answered requests, already safe in the journal.
//! A commit is a burst of CPU (B-tree pages copied, checksums, the write-out); on the box's busy
//! core it would delay the requests being served meanwhile, which showed as the router's p99
//! at low load. At nice 19 alone a request that woke during a commit still waited for the
//! commit's time slice (p99 at c=1 0.55–0.79 ms); under `SCHED_IDLE` it preempts the commit at
//! once (0.33–0.37 ms, same router, policy switched back and forth; BENCHMARKS.md). Under a
//! flood the thread gets little CPU, so the usage writer sends large batches down the normal
//! path instead (`usage/writer.rs`). Where the policy cannot be changed the thread keeps
//! nice 19, and where neither can (a system call filter), the lane still works, at normal
//! priority.

use super::StoreError;
use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::OnceLock;

type Job = Box<dyn FnOnce() + Send>;

/// The nice value of the lane's thread.
pub(super) const NICE: i32 = 19;

static LANE: OnceLock<Option<mpsc::Sender<Job>>> = OnceLock::new();

fn lane() -> Option<&'static mpsc::Sender<Job>> {
    LANE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new()
            .name("auxot-commit".into())
            .spawn(move || {
                lower_priority();
                for job in rx {
                    // A panicking job fails its own caller (its answer is dropped), not the lane.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            });
        match spawned {
            Ok(_) => Some(tx),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the background commit thread: usage commits run at normal priority");
                None
            }
        }
    })
    .as_ref()
}

fn lower_priority() {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy, ThreadSchedulePolicy,
    };
    let idle = set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if let Err(e) = idle {
        tracing::info!(error = ?e, "cannot run the background commit thread under SCHED_IDLE: it runs at nice 19, and a request that arrives during a commit may wait for its time slice");
    }
    // After the policy, whose call sets a nice value of its own. On Linux the priority of
    // PRIO_PROCESS with a thread id is that thread's alone.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), NICE) {
        tracing::info!(error = %e, "cannot lower the background commit thread's priority: usage commits share the CPU equally with requests");
    }
}

/// Runs `f` on the lane's thread (on the blocking pool if the thread could not start).
pub(super) async fn run<T, F>(f: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let gone = || StoreError::Task("the background commit did not finish".into());
    let Some(lane) = lane() else {
        return tokio::task::spawn_blocking(f).await.map_err(|_| gone());
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    lane.send(Box::new(move || {
        let _ = tx.send(f());
    }))
    .map_err(|_| gone())?;
    rx.await.map_err(|_| gone())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nice value and scheduling policy of the calling thread, from /proc.
    fn own_nice_and_policy() -> (i32, u32) {
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
        // Fields after the parenthesised name: state is the 3rd field, nice the 19th,
        // policy the 41st.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        (fields[16].parse().unwrap(), fields[38].parse().unwrap())
    }

    /// Linux's number for `SCHED_IDLE`.
    const SCHED_IDLE: u32 = 5;

    #[tokio::test]
    async fn jobs_run_in_order_on_one_low_priority_thread_and_a_panic_fails_only_its_job() {
        let first = run(|| (std::thread::current().name().map(str::to_string), own_nice_and_policy()))
            .await
            .unwrap();
        assert_eq!(first.0.as_deref(), Some("auxot-commit"));
        assert_eq!(first.1, (NICE, SCHED_IDLE));
        let order = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let waits: Vec<_> = (0..5)
            .map(|n| {
                let order = order.clone();
                run(move || order.lock().unwrap().push(n))
            })
            .collect();
        for wait in waits {
            wait.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert!(run(|| panic!("a failing job")).await.is_err());
        assert_eq!(run(|| 7).await.unwrap(), 7);
    }
}
