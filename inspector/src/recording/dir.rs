//! The recording directory, held open by descriptor: every file of a
//! recording is created, listed, opened and removed relative to it, with
//! `O_NOFOLLOW`, so a name planted in the directory (a symlink to
//! `/etc/shadow`, a FIFO, `/dev/zero`) is refused, never followed.
//!
//! The recorder runs as root; a directory another user owns or may write
//! into is refused unless the operator says it is shared on purpose, and
//! even then files are only ever created anew (`O_EXCL`), mode 0600.

use std::{
    fs::File,
    io,
    os::fd::OwnedFd,
    path::{Path, PathBuf},
};

use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, fstat, mkdirat, openat, unlinkat};

/// File names of a recording: `inspector-NNNNNN.ndjson.zst`.
pub const PREFIX: &str = "inspector-";
pub const SUFFIX: &str = ".ndjson.zst";
/// The highest sequence number a file takes: numbers never wrap, so the
/// newest file always sorts last and rotation never removes it.
pub const MAX_SEQ: u64 = 999_999_999;

/// Why the recording directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DirError {
    #[error("cannot create the recording directory {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the recording directory {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "refusing the recording directory {}: {why}; recordings hold every process's names, pids and destinations: use a directory only this user can write (mkdir -m 0700), or pass --allow-shared-dir",
        path.display()
    )]
    Shared { path: PathBuf, why: String },
}

/// The sequence number of a recording file name, `None` for other names.
pub fn seq_of(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if digits.is_empty() || digits.len() > 9 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The file name of sequence number `seq`.
pub fn name_of(seq: u64) -> String {
    format!("{PREFIX}{seq:06}{SUFFIX}")
}

/// An open recording directory.
#[derive(Debug)]
pub struct RecordingDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl RecordingDir {
    /// The directory the recorder writes to: created mode 0700 if missing;
    /// refused when another user owns it or group or others may write in
    /// it, unless `shared` (`--allow-shared-dir`).
    pub fn for_writing(path: &Path, shared: bool) -> Result<Self, DirError> {
        match mkdirat(CWD, path, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::EXIST => {}
            Err(e) => {
                return Err(DirError::Create {
                    path: path.to_owned(),
                    source: e.into(),
                });
            }
        }
        let dir = Self::open(path)?;
        if !shared {
            let st = fstat(&dir.fd).map_err(|e| DirError::Open {
                path: path.to_owned(),
                source: e.into(),
            })?;
            let me = crate::kernel::sys::geteuid();
            let why = if st.st_uid != me {
                Some(format!("it belongs to uid {}, not {me}", st.st_uid))
            } else if st.st_mode & 0o022 != 0 {
                Some(format!(
                    "group or others may write in it (mode {:o})",
                    st.st_mode & 0o7777
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(DirError::Shared {
                    path: path.to_owned(),
                    why,
                });
            }
        }
        Ok(dir)
    }

    /// An existing directory, for reading a recording.
    pub fn open(path: &Path) -> Result<Self, DirError> {
        let fd = openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| DirError::Open {
            path: path.to_owned(),
            source: e.into(),
        })?;
        Ok(Self {
            path: path.to_owned(),
            fd,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The recording files here, oldest first, by sequence number.
    pub fn segments(&self) -> io::Result<Vec<(u64, String)>> {
        let mut found = Vec::new();
        for entry in Dir::read_from(&self.fd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if let Some(seq) = seq_of(name) {
                found.push((seq, name.to_owned()));
            }
        }
        found.sort();
        Ok(found)
    }

    /// Creates the file of sequence number `seq`: a new file (`O_EXCL`: an
    /// existing name, a symlink included, is an error), mode 0600.
    pub fn create_segment(&self, seq: u64) -> io::Result<(File, PathBuf)> {
        let name = name_of(seq);
        let fd = openat(
            &self.fd,
            name.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        Ok((File::from(fd), self.path.join(name)))
    }

    /// Removes the file `name` (a symlink is removed, never followed).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        Ok(unlinkat(&self.fd, name, AtFlags::empty())?)
    }

    /// Opens the file `name` for reading: not through a symlink, and only
    /// a regular file (a FIFO would block, a device never end).
    pub fn open_segment(&self, name: &str) -> io::Result<File> {
        let fd = openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                io::Error::other("it is a symbolic link; recordings are read from regular files only (give its target explicitly)")
            } else {
                e.into()
            }
        })?;
        regular(fd)
    }
}

/// Opens `path`, given explicitly by the user (a symlink is followed), for
/// reading: only a regular file.
pub fn open_file(path: &Path) -> io::Result<File> {
    let fd = openat(
        CWD,
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    regular(fd)
}

fn regular(fd: OwnedFd) -> io::Result<File> {
    let st = fstat(&fd)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    if ft != FileType::RegularFile {
        let what = match ft {
            FileType::Fifo => "a FIFO",
            FileType::CharacterDevice | FileType::BlockDevice => "a device",
            FileType::Socket => "a socket",
            FileType::Directory => "a directory",
            _ => "not a regular file",
        };
        return Err(io::Error::other(format!(
            "it is {what}, not a recording file"
        )));
    }
    // Reads block as usual from here on.
    rustix::fs::fcntl_setfl(&fd, OFlags::empty())?;
    Ok(File::from(fd))
}

/// Whether `path` names a directory (following symlinks, as the user
/// gave it).
pub fn is_dir(path: &Path) -> bool {
    path.metadata().is_ok_and(|m| m.is_dir())
}
