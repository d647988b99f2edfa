//! argon2id password hashing on a small, fixed pool of threads (each runs its hashes in a
//! short-lived child process when the server set that up, `hash_child.rs`).
//!
//! Each hash fills 19 MiB. On the shared blocking pool, N concurrent logins meant N × 19 MiB
//! at once, and glibc kept the freed memory in per-thread arenas: a few hundred anonymous
//! requests could get the box OOM-killed. Here each hasher thread owns one memory buffer it
//! reuses for every hash, so the cost is fixed at `threads × 19 MiB` however many callers
//! come, and the queue in front of them is short: a caller that finds it full is told to come
//! back later at once, and one that waited too long in it is let go.

use super::AuthError;
use crate::crypto::Secret;
use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Verified against when the username does not exist, so both paths cost the same.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$3p4VQ6kKxRzh7T7cq4mGv2n9m0zX2A0GQ3cU9Qy9l0A";
/// Hashes waiting for a thread, per thread. Beyond that, callers are refused at once.
const QUEUE_PER_THREAD: usize = 4;
/// A hash that waited this long in the queue is dropped: its caller is told to retry.
const MAX_QUEUE_WAIT: Duration = Duration::from_secs(5);
/// At most this many hasher threads (each holds one 19 MiB buffer while it has work).
const MAX_THREADS: usize = 4;
/// A stored hash asking for more memory than this is refused rather than honoured.
const MAX_MEMORY_KIB: u32 = 256 * 1024;

pub(super) enum Task {
    Hash(Secret),
    Verify(Secret, Option<String>),
}

struct Job {
    task: Task,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Outcome, AuthError>>,
}

pub(super) enum Outcome {
    Hashed(String),
    Verified(bool),
}

/// The hasher pool. Cheap to share; its threads live as long as the process.
pub struct Hasher {
    jobs: SyncSender<Job>,
}

impl Hasher {
    /// One thread per core (at most `MAX_THREADS`).
    pub fn new() -> Hasher {
        let threads = std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
            .clamp(1, MAX_THREADS);
        Hasher::with_threads(threads)
    }

    pub fn with_threads(threads: usize) -> Hasher {
        let threads = threads.max(1);
        let (jobs, queue) = sync_channel(threads * QUEUE_PER_THREAD);
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("auxot-hasher-{index}"))
                .spawn(move || run_hasher(&queue));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hasher thread");
            }
        }
        Hasher { jobs }
    }

    /// A fresh PHC string (`$argon2id$…`) for `password`.
    pub async fn hash(&self, password: Secret) -> Result<String, AuthError> {
        match self.submit(Task::Hash(password)).await? {
            Outcome::Hashed(phc) => Ok(phc),
            Outcome::Verified(_) => Err(AuthError::Hashing),
        }
    }

    /// Whether `password` matches `stored`; with no stored hash (unknown user) the same work
    /// is done against a dummy hash and the answer is `false`.
    pub async fn verify(&self, password: Secret, stored: Option<String>) -> Result<bool, AuthError> {
        match self.submit(Task::Verify(password, stored)).await? {
            Outcome::Verified(ok) => Ok(ok),
            Outcome::Hashed(_) => Err(AuthError::Hashing),
        }
    }

    async fn submit(&self, task: Task) -> Result<Outcome, AuthError> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            task,
            queued_at: Instant::now(),
            reply,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AuthError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(AuthError::Hashing),
        }
        answer.await.map_err(|_| AuthError::Hashing)?
    }
}

impl Default for Hasher {
    fn default() -> Self {
        Hasher::new()
    }
}

fn run_hasher(queue: &Mutex<Receiver<Job>>) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        // The lock is held only while waiting for the next job, never while hashing.
        let next = {
            let queue = queue.lock().unwrap_or_else(|p| p.into_inner());
            match queue.try_recv() {
                Ok(job) => Ok(job),
                Err(TryRecvError::Disconnected) => return,
                Err(TryRecvError::Empty) => {
                    // Nothing waiting: the 19 MiB go back to the allocator for the rest of
                    // the process rather than stay pinned here between logins
                    // (re-allocating costs far less than one hash).
                    memory = Vec::new();
                    queue.recv()
                }
            }
        };
        let Ok(job) = next else { return };
        if job.queued_at.elapsed() > MAX_QUEUE_WAIT {
            let _ = job.reply.send(Err(AuthError::Busy));
            continue;
        }
        if job.reply.is_closed() {
            // The caller went away (client disconnected): skip the work.
            continue;
        }
        let result = match super::hash_child::run(&job.task) {
            Some(result) => result,
            None => work(job.task, &mut memory),
        };
        let _ = job.reply.send(result);
    }
}

/// Does one task in this process, with `memory` as the argon2 buffer.
pub(super) fn work(task: Task, memory: &mut Vec<Block>) -> Result<Outcome, AuthError> {
    match task {
        Task::Hash(password) => hash_now(&password, memory).map(Outcome::Hashed),
        Task::Verify(password, stored) => verify_now(&password, stored.as_deref(), memory).map(Outcome::Verified),
    }
}

/// Grows `memory` to what `params` need (kept while more jobs are queued).
fn blocks<'m>(memory: &'m mut Vec<Block>, params: &Params) -> &'m mut [Block] {
    let needed = params.block_count();
    if memory.len() < needed {
        memory.resize(needed, Block::default());
    }
    &mut memory[..needed]
}

pub(super) fn hash_now(password: &Secret, memory: &mut Vec<Block>) -> Result<String, AuthError> {
    let params = Params::default();
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|_| AuthError::Hashing)?;
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            salt_bytes,
            &mut out,
            blocks(memory, &params),
        )
        .map_err(|_| AuthError::Hashing)?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|_| AuthError::Hashing)?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|_| AuthError::Hashing)?),
    };
    Ok(phc.to_string())
}

pub(super) fn verify_now(password: &Secret, stored: Option<&str>, memory: &mut Vec<Block>) -> Result<bool, AuthError> {
    let known = stored.is_some();
    let parsed = PasswordHash::new(stored.unwrap_or(DUMMY_HASH)).map_err(|_| AuthError::Hashing)?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|_| AuthError::Hashing)?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|_| AuthError::Hashing)?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(|_| AuthError::Hashing)?;
    if params.m_cost() > MAX_MEMORY_KIB {
        return Err(AuthError::Hashing);
    }
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Err(AuthError::Hashing);
    };
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|_| AuthError::Hashing)?;
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params.clone())
        .hash_password_into_with_memory(
            password.expose().as_bytes(),
            salt_bytes,
            &mut out,
            blocks(memory, &params),
        )
        .map_err(|_| AuthError::Hashing)?;
    // `Output`'s equality is constant-time.
    let matches = Output::new(&out).map_err(|_| AuthError::Hashing)? == expected;
    Ok(matches && known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::PasswordVerifier;

    #[tokio::test]
    async fn hash_then_verify() {
        let hasher = Hasher::with_threads(1);
        let h = hasher.hash(Secret::new("hunter2hunter2".into())).await.unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(hasher
            .verify(Secret::new("hunter2hunter2".into()), Some(h.clone()))
            .await
            .unwrap());
        assert!(!hasher
            .verify(Secret::new("wrong-password".into()), Some(h.clone()))
            .await
            .unwrap());
        assert!(!hasher.verify(Secret::new("anything".into()), None).await.unwrap());
        // The standard verifier agrees: hashes stay readable by any argon2 implementation.
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(Argon2::default().verify_password(b"hunter2hunter2", &parsed).is_ok());
    }

    #[tokio::test]
    async fn hashes_made_by_the_standard_hasher_verify() {
        use argon2::PasswordHasher;
        let salt = SaltString::generate(&mut OsRng);
        let phc = Argon2::default()
            .hash_password(b"correct horse", &salt)
            .unwrap()
            .to_string();
        let hasher = Hasher::with_threads(1);
        assert!(hasher
            .verify(Secret::new("correct horse".into()), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!hasher
            .verify(Secret::new("correct horsf".into()), Some(phc))
            .await
            .unwrap());
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let hasher = Hasher::with_threads(1);
        let calls = (0..20).map(|_| hasher.verify(Secret::new("x".repeat(12)), None));
        let results = futures_util::future::join_all(calls).await;
        let busy = results.iter().filter(|r| matches!(r, Err(AuthError::Busy))).count();
        let done = results.iter().filter(|r| matches!(r, Ok(false))).count();
        assert!(
            busy > 0,
            "20 callers on 1 thread with a queue of {QUEUE_PER_THREAD} must see refusals"
        );
        assert_eq!(busy + done, 20);
        assert!(done >= QUEUE_PER_THREAD, "the queue's worth is served: {done}");
    }
}
