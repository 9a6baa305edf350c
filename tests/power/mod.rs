//! A test-only filesystem that forgets, on command, everything not synced:
//! what a power cut does to a disk. Files keep two copies of their bytes:
//! what was written, and what was last made durable by fsync/fdatasync.
//! `cut()` throws the first away. Directory structure counts as durable.
//!
//! Writes reach it synchronously (FUSE without writeback cache), so a
//! process killed mid-stream leaves exactly what it wrote; `sync_file_range`
//! never reaches a FUSE filesystem, so data "flushed" only that way is lost
//! on a cut, as on a real power cut.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

const TTL: Duration = Duration::from_millis(0);

#[derive(Debug)]
enum Node {
    Dir {
        parent: u64,
        entries: BTreeMap<String, u64>,
    },
    File {
        written: Vec<u8>,
        durable: Vec<u8>,
    },
}

#[derive(Debug, Default)]
struct State {
    nodes: BTreeMap<u64, Node>,
    next: u64,
    syncs: u64,
}

/// The filesystem's contents, shared with the test that cuts the power.
#[derive(Clone, Default)]
pub struct Disk(Arc<Mutex<State>>, Arc<Gate>);

/// Holds fsync calls while closed (a slow SD card, made deterministic):
/// whether it is closed, and how many syncs wait at it.
#[derive(Default)]
struct Gate {
    state: Mutex<(bool, u64)>,
    changed: Condvar,
}

impl Disk {
    pub fn new() -> Disk {
        let mut state = State {
            next: 2,
            ..Default::default()
        };
        state.nodes.insert(
            1,
            Node::Dir {
                parent: 1,
                entries: BTreeMap::new(),
            },
        );
        Disk(Arc::new(Mutex::new(state)), Arc::default())
    }

    /// Power cut: every file loses what was written since its last sync.
    pub fn cut(&self) {
        let mut state = self.0.lock().unwrap();
        for node in state.nodes.values_mut() {
            if let Node::File { written, durable } = node {
                *written = durable.clone();
            }
        }
    }

    /// Makes every fsync/fdatasync wait until `release_syncs`.
    pub fn hold_syncs(&self) {
        self.1.state.lock().unwrap().0 = true;
    }

    pub fn release_syncs(&self) {
        self.1.state.lock().unwrap().0 = false;
        self.1.changed.notify_all();
    }

    /// Waits (at most `limit`) until a sync is held; whether one is.
    pub fn wait_for_held_sync(&self, limit: std::time::Duration) -> bool {
        let state = self.1.state.lock().unwrap();
        let (state, _) = self
            .1
            .changed
            .wait_timeout_while(state, limit, |s| s.1 == 0)
            .unwrap();
        state.1 > 0
    }

    fn pass_gate(&self) {
        let mut state = self.1.state.lock().unwrap();
        if !state.0 {
            return;
        }
        state.1 += 1;
        self.1.changed.notify_all();
        while state.0 {
            state = self.1.changed.wait(state).unwrap();
        }
        state.1 -= 1;
        self.1.changed.notify_all();
    }

    /// fsync/fdatasync calls seen so far.
    pub fn syncs(&self) -> u64 {
        self.0.lock().unwrap().syncs
    }
}

pub struct PowerCutFs {
    disk: Disk,
}

fn attr(ino: u64, node: &Node) -> FileAttr {
    let (kind, size, perm, nlink) = match node {
        Node::Dir { .. } => (FileType::Directory, 0, 0o755, 2),
        Node::File { written, .. } => (FileType::RegularFile, written.len() as u64, 0o644, 1),
    };
    let now = SystemTime::now();
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: now,
        mtime: now,
        ctime: now,
        crtime: now,
        kind,
        perm,
        nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl PowerCutFs {
    /// Mounts a fresh, empty filesystem at `at` (unmounted when dropped).
    pub fn mount(at: &Path) -> std::io::Result<(Disk, fuser::BackgroundSession)> {
        let disk = Disk::new();
        let mut config = fuser::Config::default();
        config.mount_options = vec![fuser::MountOption::FSName("fitedge-powercut".into())];
        config.n_threads = Some(4);
        let session = fuser::spawn_mount(PowerCutFs { disk: disk.clone() }, at, &config)?;
        Ok((disk, session))
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.disk.0.lock().unwrap())
    }
}

fn child(state: &State, parent: u64, name: &OsStr) -> Option<u64> {
    match state.nodes.get(&parent) {
        Some(Node::Dir { entries, .. }) => entries.get(name.to_str()?).copied(),
        _ => None,
    }
}

fn insert(state: &mut State, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
    let name = name.to_str().ok_or(Errno::EINVAL)?.to_string();
    let ino = state.next;
    match state.nodes.get_mut(&parent) {
        Some(Node::Dir { entries, .. }) => {
            if entries.contains_key(&name) {
                return Err(Errno::EEXIST);
            }
            entries.insert(name, ino);
        }
        _ => return Err(Errno::ENOTDIR),
    }
    state.next += 1;
    state.nodes.insert(ino, node);
    Ok(ino)
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.with(|s| match child(s, parent.0, name) {
            Some(ino) => reply.entry(&TTL, &attr(ino, &s.nodes[&ino]), Generation(0)),
            None => reply.error(Errno::ENOENT),
        })
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.with(|s| match s.nodes.get(&ino.0) {
            Some(node) => reply.attr(&TTL, &attr(ino.0, node)),
            None => reply.error(Errno::ENOENT),
        })
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.with(|s| {
            if let (Some(size), Some(Node::File { written, .. })) = (size, s.nodes.get_mut(&ino.0))
            {
                written.resize(size as usize, 0);
            }
            match s.nodes.get(&ino.0) {
                Some(node) => reply.attr(&TTL, &attr(ino.0, node)),
                None => reply.error(Errno::ENOENT),
            }
        })
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.with(|s| {
            match insert(
                s,
                parent.0,
                name,
                Node::Dir {
                    parent: parent.0,
                    entries: BTreeMap::new(),
                },
            ) {
                Ok(ino) => reply.entry(&TTL, &attr(ino, &s.nodes[&ino]), Generation(0)),
                Err(e) => reply.error(e),
            }
        })
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.with(|s| {
            let ino = match child(s, parent.0, name) {
                Some(ino) => Ok(ino),
                None => insert(
                    s,
                    parent.0,
                    name,
                    Node::File {
                        written: Vec::new(),
                        durable: Vec::new(),
                    },
                ),
            };
            match ino {
                Ok(ino) => reply.created(
                    &TTL,
                    &attr(ino, &s.nodes[&ino]),
                    Generation(0),
                    FileHandle(0),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(e),
            }
        })
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.with(|s| {
            let Some(ino) = child(s, parent.0, name) else {
                return reply.error(Errno::ENOENT);
            };
            if let Some(Node::Dir { entries, .. }) = s.nodes.get_mut(&parent.0) {
                entries.retain(|_, i| *i != ino);
            }
            s.nodes.remove(&ino);
            reply.ok()
        })
    }

    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let empty = self.with(|s| {
            child(s, parent.0, name).map(
                |ino| matches!(&s.nodes[&ino], Node::Dir { entries, .. } if entries.is_empty()),
            )
        });
        match empty {
            None => reply.error(Errno::ENOENT),
            Some(false) => reply.error(Errno::ENOTEMPTY),
            Some(true) => self.unlink(req, parent, name, reply),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.with(|s| {
            let Some(ino) = child(s, parent.0, name) else {
                return reply.error(Errno::ENOENT);
            };
            let Some(newname) = newname.to_str() else {
                return reply.error(Errno::EINVAL);
            };
            if let Some(Node::Dir { entries, .. }) = s.nodes.get_mut(&parent.0) {
                entries.retain(|_, i| *i != ino);
            }
            let replaced = match s.nodes.get_mut(&newparent.0) {
                Some(Node::Dir { entries, .. }) => entries.insert(newname.to_string(), ino),
                _ => return reply.error(Errno::ENOTDIR),
            };
            if let Some(old) = replaced {
                s.nodes.remove(&old);
            }
            if let Some(Node::Dir { parent, .. }) = s.nodes.get_mut(&ino) {
                *parent = newparent.0;
            }
            reply.ok()
        })
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.with(|s| match s.nodes.get(&ino.0) {
            Some(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            None => reply.error(Errno::ENOENT),
        })
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.with(|s| match s.nodes.get(&ino.0) {
            Some(Node::File { written, .. }) => {
                let start = (offset as usize).min(written.len());
                let end = (start + size as usize).min(written.len());
                reply.data(&written[start..end])
            }
            _ => reply.error(Errno::EISDIR),
        })
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _wf: WriteFlags,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.with(|s| match s.nodes.get_mut(&ino.0) {
            Some(Node::File { written, .. }) => {
                let end = offset as usize + data.len();
                if written.len() < end {
                    written.resize(end, 0);
                }
                written[offset as usize..end].copy_from_slice(data);
                reply.written(data.len() as u32)
            }
            _ => reply.error(Errno::EISDIR),
        })
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.disk.pass_gate();
        self.with(|s| {
            s.syncs += 1;
            if let Some(Node::File { written, durable }) = s.nodes.get_mut(&ino.0) {
                *durable = written.clone();
            }
            reply.ok()
        })
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok()
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty())
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.with(|s| {
            let Some(Node::Dir { parent, entries }) = s.nodes.get(&ino.0) else {
                return reply.error(Errno::ENOTDIR);
            };
            let mut all = vec![
                (ino.0, FileType::Directory, ".".to_string()),
                (*parent, FileType::Directory, "..".to_string()),
            ];
            for (name, child) in entries {
                let kind = match s.nodes.get(child) {
                    Some(Node::Dir { .. }) => FileType::Directory,
                    _ => FileType::RegularFile,
                };
                all.push((*child, kind, name.clone()));
            }
            for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
                if reply.add(INodeNo(child), (i + 1) as u64, kind, name) {
                    break;
                }
            }
            reply.ok()
        })
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 16, 1 << 15, 4096, 255, 4096)
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        self.with(|s| {
            if let Some(Node::File { written, .. }) = s.nodes.get_mut(&ino.0) {
                let end = (offset + length) as usize;
                if written.len() < end {
                    written.resize(end, 0);
                }
            }
            reply.ok()
        })
    }
}
