//! Reading a database file without changing it.
//!
//! redb writes to its file whenever it opens it (it marks the file "in use", and repairs it
//! after a crash). Start-up must check the secret key before anything is written, so a
//! refused start (wrong or missing key) leaves the file exactly as it was, bytes and mtime.
//! This backend reads the file through a read-only handle and keeps every write redb makes
//! in memory, where it is dropped with the database.

use redb::StorageBackend;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::Mutex;

/// Writes are kept per chunk of this size.
const CHUNK: u64 = 4096;

#[derive(Debug)]
pub(super) struct CopyOnWrite {
    file: File,
    file_len: u64,
    state: Mutex<Overlay>,
}

#[derive(Debug)]
struct Overlay {
    len: u64,
    chunks: HashMap<u64, Vec<u8>>,
}

impl CopyOnWrite {
    pub(super) fn open(path: &std::path::Path) -> io::Result<CopyOnWrite> {
        let file = File::open(path)?;
        let file_len = file.metadata()?.len();
        Ok(CopyOnWrite {
            file,
            file_len,
            state: Mutex::new(Overlay {
                len: file_len,
                chunks: HashMap::new(),
            }),
        })
    }

    /// One chunk as it stands: the overlay's copy, else the file's bytes (zeros past its end).
    fn chunk(&self, overlay: &Overlay, index: u64) -> io::Result<Vec<u8>> {
        if let Some(chunk) = overlay.chunks.get(&index) {
            return Ok(chunk.clone());
        }
        let mut buf = vec![0u8; CHUNK as usize];
        let start = index * CHUNK;
        if start < self.file_len {
            let available = (self.file_len - start).min(CHUNK) as usize;
            read_exact_at(&self.file, &mut buf[..available], start)?;
        }
        Ok(buf)
    }
}

#[cfg(unix)]
fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
}

#[cfg(windows)]
fn read_exact_at(file: &File, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

impl StorageBackend for CopyOnWrite {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.state.lock().unwrap_or_else(|p| p.into_inner()).len)
    }

    fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, io::Error> {
        let overlay = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if offset + len as u64 > overlay.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        let end = offset + len as u64;
        while at < end {
            let index = at / CHUNK;
            let within = (at % CHUNK) as usize;
            let take = ((CHUNK as usize - within) as u64).min(end - at) as usize;
            if !overlay.chunks.contains_key(&index) && index * CHUNK + CHUNK <= self.file_len {
                // Fast path: an unwritten chunk, read straight from the file.
                let mut buf = vec![0u8; take];
                read_exact_at(&self.file, &mut buf, at)?;
                out.extend_from_slice(&buf);
            } else {
                let chunk = self.chunk(&overlay, index)?;
                out.extend_from_slice(&chunk[within..within + take]);
            }
            at += take as u64;
        }
        Ok(out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut overlay = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if len < overlay.len {
            // Bytes past the new end must read as zeros if the file grows again.
            let first_cut = len / CHUNK;
            let within = (len % CHUNK) as usize;
            if within > 0 {
                let mut chunk = self.chunk(&overlay, first_cut)?;
                chunk[within..].fill(0);
                overlay.chunks.insert(first_cut, chunk);
            }
            let keep_below = len.div_ceil(CHUNK);
            overlay.chunks.retain(|index, _| *index < keep_below);
            let old_chunks = overlay.len.div_ceil(CHUNK);
            for index in keep_below..old_chunks {
                overlay.chunks.insert(index, vec![0u8; CHUNK as usize]);
            }
        }
        overlay.len = len;
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut overlay = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut at = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let index = at / CHUNK;
            let within = (at % CHUNK) as usize;
            let take = (CHUNK as usize - within).min(rest.len());
            let mut chunk = self.chunk(&overlay, index)?;
            chunk[within..within + take].copy_from_slice(&rest[..take]);
            overlay.chunks.insert(index, chunk);
            rest = &rest[take..];
            at += take as u64;
        }
        overlay.len = overlay.len.max(offset + data.len() as u64);
        Ok(())
    }
}
