//! Leases: at most one reader per run and one writer per (run, shard) at a time (DESIGN §7).
//!
//! A lease is a row of revrepl's own `leases` table, keyed by run and role (`reader`,
//! `writer:<shard>`), naming its owner (host, pid and a random id, new for every process) and
//! when it expires. A process takes the lease when the row is absent, expired, or its own;
//! otherwise it is refused with [`MetadataError::LeaseHeld`], naming the owner and the expiry.
//! The holder renews the lease every third of its time to live and deletes the row when it
//! stops cleanly; a holder killed with SIGKILL leaves the row, which expires after the time to
//! live (default [`DEFAULT_LEASE_TTL`]), after which a new process takes it. A new process on
//! the same host takes it over at once when the holder's process is gone (no process has its
//! pid), as when `revrepl run` restarts a child killed with SIGKILL.
//!
//! Invariants (of [`LeaseKeeper`]):
//! - The holder considers the lease lost at a local deadline, a sixth of the time to live
//!   before the expiry it last wrote (measured from before the write, on the monotonic
//!   clock), unless a renewal succeeded meanwhile. So it stops before any other process can
//!   see the lease expired, given clocks within that margin of each other.
//! - A renewal that finds another owner, or no row any more, also loses the lease at once.
//! - Expiry times are wall-clock times of the writing process (UTC); machines sharing a
//!   Spanner metadata store need synchronized clocks (NTP), as Kubernetes nodes have.

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use revrepl_record::{ShardId, Timestamp};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::MetadataError;
use crate::run::RunId;
use crate::store::MetadataStore;

/// How long a lease lives without renewal by default.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// The shortest time to live accepted: renewals run every third of it.
pub const MIN_LEASE_TTL: Duration = Duration::from_secs(3);

/// Whose lease.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LeaseRole {
    /// The run's reader.
    Reader,
    /// The writer of one shard of the run.
    Writer(ShardId),
}

impl LeaseRole {
    /// The `role` column: `reader` or `writer:<shard>`.
    pub fn key(&self) -> String {
        match self {
            Self::Reader => "reader".to_owned(),
            Self::Writer(shard) => format!("writer:{shard}"),
        }
    }
}

impl fmt::Display for LeaseRole {
    /// `the reader` or `the writer of shard s1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Reader => f.write_str("the reader"),
            Self::Writer(shard) => write!(f, "the writer of shard {shard}"),
        }
    }
}

/// Who holds a lease: `host pid 1234 #9f86d081884c7d65`, unique per process.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseOwner(String);

impl LeaseOwner {
    /// This process: the host name, the pid and a random id (pids are reused).
    pub fn this_process() -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown-host".to_owned());
        // A randomly seeded hasher (per process) gives a random id without another dependency.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let random = hasher.finish();
        Self(format!("{host} pid {} #{random:016x}", std::process::id()))
    }

    /// An owner with this exact text (tests, tools).
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    /// The text stored in the `owner` column.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One row of `leases`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The `role` column (`reader`, `writer:<shard>`).
    pub role: String,
    /// The holder.
    pub owner: String,
    /// When it expires unless renewed.
    pub expires_at: Timestamp,
}

/// What [`MetadataStore::acquire_lease`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAttempt {
    /// The caller holds the lease until the requested expiry.
    Acquired,
    /// Another owner holds it; nothing was written.
    HeldBy(Lease),
    /// The `leases` table does not exist (a store opened with
    /// [`MissingTables::Fail`](crate::MissingTables) on a database the reference or an older
    /// revrepl created): nothing can be held.
    NoTable,
}

/// Holds a lease while a reader or a writer runs: renews it in the background, says when it
/// is lost, and releases it on [`LeaseKeeper::release`]. Dropping it stops the renewals
/// without releasing (the lease then expires).
#[derive(Debug)]
pub struct LeaseKeeper {
    shared: Arc<Shared>,
    renewals: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct Shared {
    store: Arc<dyn MetadataStore>,
    run_id: RunId,
    role: LeaseRole,
    owner: LeaseOwner,
    ttl: Duration,
    /// Cancelled when the lease is lost.
    lost: CancellationToken,
    /// Why it was lost.
    reason: Mutex<Option<String>>,
    /// When this process must consider the lease lost unless renewed (`None`: no lease table,
    /// nothing to lose).
    deadline: Mutex<Option<Instant>>,
}

impl LeaseKeeper {
    /// Takes the lease of `role` in run `run_id` for `owner`, for `ttl` (at least
    /// [`MIN_LEASE_TTL`]), and starts renewing it. Refused with [`MetadataError::LeaseHeld`]
    /// while another process holds it. Without a `leases` table, logs a warning and holds
    /// nothing.
    pub async fn acquire(
        store: Arc<dyn MetadataStore>,
        run_id: RunId,
        role: LeaseRole,
        owner: LeaseOwner,
        ttl: Duration,
    ) -> Result<Self, MetadataError> {
        let ttl = ttl.max(MIN_LEASE_TTL);
        let began = Instant::now();
        let (now, expires_at) = expiry(ttl);
        let mut attempt = store
            .acquire_lease(&run_id, &role.key(), owner.as_str(), now, expires_at)
            .await?;
        if let LeaseAttempt::HeldBy(held) = &attempt
            && holder_is_gone(&held.owner, &owner)
        {
            // Its process is gone from this host (killed without releasing, e.g. SIGKILL and
            // restarted by `revrepl run`): take the lease over now instead of waiting for
            // it to expire. In the same transaction as ever: only if it still expires when
            // the dead holder's did, so two processes doing this at once cannot both win.
            tracing::warn!(
                run_id = %run_id,
                role = %role,
                holder = %held.owner,
                "the lease's holder no longer runs on this host: taking the lease over"
            );
            attempt = store
                .acquire_lease(
                    &run_id,
                    &role.key(),
                    owner.as_str(),
                    held.expires_at,
                    expires_at,
                )
                .await?;
        }
        let deadline = match attempt {
            LeaseAttempt::Acquired => Some(local_deadline(began, ttl)),
            LeaseAttempt::HeldBy(lease) => {
                return Err(MetadataError::LeaseHeld {
                    place: format!(
                        "table {} of metadata store {}",
                        store.tables().leases(),
                        store.location()
                    ),
                    run_id: run_id.to_string(),
                    role: role.to_string(),
                    owner: lease.owner,
                    expires_at: lease.expires_at,
                });
            }
            LeaseAttempt::NoTable => {
                tracing::warn!(
                    store = %store.location(),
                    table = store.tables().leases(),
                    run_id = %run_id,
                    role = %role,
                    "the table of leases does not exist (create the metadata tables to add it): \
                     nothing stops a second process from running beside this one"
                );
                None
            }
        };
        tracing::info!(run_id = %run_id, role = %role, owner = %owner, ?ttl, "lease taken");
        let shared = Arc::new(Shared {
            store,
            run_id,
            role,
            owner,
            ttl,
            lost: CancellationToken::new(),
            reason: Mutex::new(None),
            deadline: Mutex::new(deadline),
        });
        let renewals = deadline
            .is_some()
            .then(|| tokio::spawn(renew(Arc::clone(&shared))));
        Ok(Self {
            shared,
            renewals: Mutex::new(renewals),
        })
    }

    /// Cancelled when the lease is lost: stop, and record nothing more.
    pub fn lost(&self) -> CancellationToken {
        self.shared.lost.clone()
    }

    /// `Ok` while the lease is held (or there is no lease table); otherwise
    /// [`MetadataError::LeaseLost`]. Checks the local deadline too, so it is right even before
    /// the renewal task noticed.
    pub fn check(&self) -> Result<(), MetadataError> {
        let expired = lock(&self.shared.deadline).is_some_and(|d| Instant::now() >= d);
        if expired {
            self.shared
                .lose("it was not renewed in time (the metadata store did not answer)");
        }
        if self.shared.lost.is_cancelled() {
            return Err(self.shared.lost_error());
        }
        Ok(())
    }

    /// The error that says the lease is lost (for callers that saw [`LeaseKeeper::lost`]).
    pub fn lost_error(&self) -> MetadataError {
        self.shared.lost_error()
    }

    /// Stops renewing and deletes the lease (if still held), so that another process may take
    /// it at once. A failure is only logged: the lease expires anyway. Call it once, when the
    /// work the lease protects has stopped.
    pub async fn release(&self) {
        self.stop_renewing();
        let shared = &self.shared;
        if lock(&shared.deadline).is_none() || shared.lost.is_cancelled() {
            return;
        }
        let released = shared
            .store
            .release_lease(&shared.run_id, &shared.role.key(), shared.owner.as_str())
            .await;
        match released {
            Ok(()) => {
                tracing::info!(run_id = %shared.run_id, role = %shared.role, "lease released")
            }
            Err(error) => tracing::warn!(
                run_id = %shared.run_id,
                role = %shared.role,
                %error,
                "releasing the lease failed; it expires by itself"
            ),
        }
    }
}

impl LeaseKeeper {
    fn stop_renewing(&self) {
        if let Some(renewals) = lock(&self.renewals).take() {
            renewals.abort();
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop_renewing();
    }
}

impl Shared {
    fn lose(&self, reason: &str) {
        let mut slot = lock(&self.reason);
        if slot.is_none() {
            *slot = Some(reason.to_owned());
            tracing::error!(
                run_id = %self.run_id,
                role = %self.role,
                reason,
                "lease lost: stopping"
            );
        }
        drop(slot);
        self.lost.cancel();
    }

    fn lost_error(&self) -> MetadataError {
        MetadataError::LeaseLost {
            store: self.store.location().to_owned(),
            run_id: self.run_id.to_string(),
            role: self.role.to_string(),
            reason: lock(&self.reason)
                .clone()
                .unwrap_or_else(|| "it was not renewed in time".to_owned()),
        }
    }
}

/// Renews the lease every third of its time to live until it is lost or the task is aborted.
async fn renew(shared: Arc<Shared>) {
    let interval = shared.ttl / 3;
    loop {
        let Some(deadline) = *lock(&shared.deadline) else {
            return;
        };
        let next = Instant::now() + interval;
        tokio::select! {
            () = tokio::time::sleep_until(deadline.into()) => {
                shared.lose("it was not renewed in time (the metadata store did not answer)");
                return;
            }
            () = tokio::time::sleep_until(next.into()) => {}
        }
        let began = Instant::now();
        let (now, expires_at) = expiry(shared.ttl);
        let role = shared.role.key();
        let attempt = shared.store.acquire_lease(
            &shared.run_id,
            &role,
            shared.owner.as_str(),
            now,
            expires_at,
        );
        let outcome = tokio::select! {
            outcome = attempt => outcome,
            () = tokio::time::sleep_until(deadline.into()) => {
                shared.lose("it was not renewed in time (the metadata store did not answer)");
                return;
            }
        };
        match outcome {
            Ok(LeaseAttempt::Acquired) => {
                *lock(&shared.deadline) = Some(local_deadline(began, shared.ttl));
            }
            Ok(LeaseAttempt::HeldBy(lease)) => {
                shared.lose(&format!(
                    "{} holds it now (until {})",
                    lease.owner,
                    lease.expires_at.to_rfc3339()
                ));
                return;
            }
            Ok(LeaseAttempt::NoTable) => {
                shared.lose("the table of leases no longer exists");
                return;
            }
            Err(error) => tracing::warn!(
                run_id = %shared.run_id,
                role = %shared.role,
                %error,
                "renewing the lease failed; trying again"
            ),
        }
    }
}

/// Whether the process that `holder` (an owner text of [`LeaseOwner::this_process`]) names
/// ran on this host and is gone: its pid is ours (a pid names one live process at a time,
/// and the holder is not us), or no process has its pid. Unknown formats, other hosts, and
/// hosts without `/proc` say no: the lease is then respected until it expires.
fn holder_is_gone(holder: &str, me: &LeaseOwner) -> bool {
    let parse = |text: &str| -> Option<(String, u32)> {
        let (host, rest) = text.split_once(" pid ")?;
        let pid = rest.split_once(" #")?.0.parse().ok()?;
        Some((host.to_owned(), pid))
    };
    let (Some((host, pid)), Some((my_host, my_pid))) = (parse(holder), parse(me.as_str())) else {
        return false;
    };
    if host != my_host || holder == me.as_str() {
        return false;
    }
    if pid == my_pid {
        return true;
    }
    let proc = std::path::Path::new("/proc");
    proc.join("self").exists() && !proc.join(pid.to_string()).exists()
}

/// Now and the expiry `ttl` from now, on the wall clock.
fn expiry(ttl: Duration) -> (Timestamp, Timestamp) {
    let now = chrono::Utc::now();
    let later = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    (Timestamp::from(now), Timestamp::from(later))
}

/// When a lease written at `began` with `ttl` must count as lost locally: a sixth of the time
/// to live before it expires for everyone else.
fn local_deadline(began: Instant, ttl: Duration) -> Instant {
    began + ttl - ttl / 6
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_owners_read_well() {
        let shard = ShardId::new("ls1").expect("valid shard");
        assert_eq!(LeaseRole::Reader.key(), "reader");
        assert_eq!(LeaseRole::Writer(shard.clone()).key(), "writer:ls1");
        assert_eq!(
            LeaseRole::Writer(shard).to_string(),
            "the writer of shard ls1"
        );
        let me = LeaseOwner::this_process();
        assert!(
            me.as_str()
                .contains(&format!(" pid {} #", std::process::id())),
            "{me}"
        );
        assert_ne!(me, LeaseOwner::this_process(), "a random id per owner");
    }

    #[test]
    fn only_holders_gone_from_this_host_are_taken_over() {
        let me = LeaseOwner::this_process();
        let host = me.as_str().split(" pid ").next().expect("host").to_owned();
        let pid = std::process::id();
        // Same pid, another random id: an earlier process with our pid, so gone.
        assert!(holder_is_gone(
            &format!("{host} pid {pid} #0000000000000001"),
            &me
        ));
        // No such process (pids stay below 2^22 on Linux).
        assert!(holder_is_gone(&format!("{host} pid 4294967295 #01"), &me));
        // A live process (pid 1 always runs), another host, ourselves, unknown formats.
        assert!(!holder_is_gone(&format!("{host} pid 1 #01"), &me));
        assert!(!holder_is_gone("elsewhere pid 4294967295 #01", &me));
        assert!(!holder_is_gone(me.as_str(), &me));
        assert!(!holder_is_gone("intruder", &me));
    }

    #[test]
    fn the_local_deadline_comes_before_the_expiry() {
        let began = Instant::now();
        let ttl = Duration::from_secs(30);
        assert_eq!(local_deadline(began, ttl), began + Duration::from_secs(25));
    }
}
