//! A worker's one pool of slots, shared by its connections to every router of a fleet.
//!
//! The worker is the authority on its own capacity: each router only sees its own jobs, so
//! two routers may both believe the last slot is free. A job takes a [`Permit`] here (a
//! compare-and-swap, never past the capacity) before it runs; the loser of such a race is
//! refused at once and its router tries elsewhere. Every change (a permit taken or given
//! back, a router connected or lost) bumps a version that each connection watches, so
//! every router hears the pool's state at once.

use super::protocol::RouterLink;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::watch;

pub struct SlotPool {
    capacity: u32,
    busy: AtomicU32,
    /// One entry per `--server`, in the order given.
    links: Mutex<Vec<RouterLink>>,
    changed: watch::Sender<u64>,
}

impl SlotPool {
    pub fn new(capacity: u32, servers: &[String]) -> Arc<SlotPool> {
        let links = servers
            .iter()
            .map(|url| RouterLink {
                url: url.clone(),
                connected: false,
            })
            .collect();
        Arc::new(SlotPool {
            capacity: capacity.max(1),
            busy: AtomicU32::new(0),
            links: Mutex::new(links),
            changed: watch::channel(0).0,
        })
    }

    pub fn capacity(&self) -> u32 {
        self.capacity
    }

    pub fn busy(&self) -> u32 {
        self.busy.load(Ordering::Acquire)
    }

    /// Takes a slot if one is free; the permit gives it back on drop.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let taken = self
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            return None;
        }
        self.bump();
        Some(Permit { pool: self.clone() })
    }

    /// Every router link and whether it is up now.
    pub fn links(&self) -> Vec<RouterLink> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set_connected(&self, index: usize, connected: bool) {
        let changed = {
            let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
            match links.get_mut(index) {
                Some(link) if link.connected != connected => {
                    link.connected = connected;
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.bump();
        }
    }

    /// A receiver that sees every later change of the pool.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|version| *version = version.wrapping_add(1));
    }
}

/// One taken slot of the pool.
pub struct Permit {
    pool: Arc<SlotPool>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let _ = self
            .pool
            .busy
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.pool.bump();
    }
}

/// Marks one router link as up for as long as it lives.
pub struct LinkUp {
    pool: Arc<SlotPool>,
    index: usize,
}

impl LinkUp {
    pub fn new(pool: &Arc<SlotPool>, index: usize) -> LinkUp {
        pool.set_connected(index, true);
        LinkUp {
            pool: pool.clone(),
            index,
        }
    }
}

impl Drop for LinkUp {
    fn drop(&mut self) {
        self.pool.set_connected(self.index, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_never_exceed_capacity_across_threads() {
        let pool = SlotPool::new(3, &["http://a".into(), "http://b".into()]);
        let held = Mutex::new(Vec::new());
        let most = AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..8 {
                scope.spawn(|| {
                    for i in 0..200 {
                        if let Some(permit) = pool.try_acquire() {
                            most.fetch_max(pool.busy(), Ordering::SeqCst);
                            if i % 3 == 0 {
                                held.lock().unwrap().push(permit);
                            }
                        }
                        if i % 5 == 0 {
                            held.lock().unwrap().pop();
                        }
                    }
                });
            }
        });
        assert!(most.load(Ordering::SeqCst) <= 3);
        held.lock().unwrap().clear();
        assert_eq!(pool.busy(), 0);
    }

    #[tokio::test]
    async fn changes_wake_watchers_and_links_follow_their_guard() {
        let pool = SlotPool::new(1, &["http://a".into(), "http://b".into()]);
        let mut seen = pool.watch();
        let up = LinkUp::new(&pool, 1);
        assert!(seen.has_changed().unwrap());
        seen.borrow_and_update();
        assert_eq!(
            pool.links(),
            vec![
                RouterLink {
                    url: "http://a".into(),
                    connected: false
                },
                RouterLink {
                    url: "http://b".into(),
                    connected: true
                }
            ]
        );
        let permit = pool.try_acquire().unwrap();
        assert!(pool.try_acquire().is_none());
        assert!(seen.has_changed().unwrap());
        seen.borrow_and_update();
        drop(permit);
        assert!(seen.has_changed().unwrap());
        assert_eq!(pool.busy(), 0);
        drop(up);
        assert!(!pool.links()[1].connected);
    }
}
