//! Unpacks one layer into a directory that overlayfs can use directly as a lower dir.
//!
//! Every path is resolved component by component with `openat(O_NOFOLLOW|O_DIRECTORY)` from
//! the layer root, so no entry can write through a symlink, `..` or an absolute path; files are
//! always created fresh (`O_EXCL`), so none writes through an earlier hardlink either.
//! OCI whiteouts become overlay whiteouts: `.wh.NAME` a 0:0 character device, `.wh..wh..opq`
//! the `trusted.overlay.opaque=y` xattr on its directory.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fchmodat, futimens, mkdirat, mknodat, utimensat};
use nix::sys::stat::{FchmodatFlags, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, linkat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use nix::NixPath;
use tar::EntryType;

use super::blobs::{Blobs, HashingReader};
use super::compression;
use super::error::{ImageError, Result, Unsafe};
use super::fsutil;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Unpacks the layer stored as blob `blob` into `layers_dir/<hex of diff_id>` unless it is
/// there already, and returns that directory. The uncompressed stream must hash to `diff_id`.
/// A failure (or a crash) leaves no directory under the final name.
pub fn ensure_layer(
    layers_dir: &Path,
    blobs: &Blobs,
    blob: &str,
    diff_id: &str,
) -> Result<PathBuf> {
    let dest = layer_path(layers_dir, diff_id)?;
    if dest.is_dir() {
        return Ok(dest);
    }
    let tmp = fsutil::tmp_path(layers_dir);
    std::fs::create_dir(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
    match unpack_verified(&tmp, blobs, blob, diff_id) {
        Ok(()) => {}
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    }
    match std::fs::rename(&tmp, &dest) {
        Ok(()) => fsutil::fsync_dir(layers_dir)?,
        // Another process unpacked the same layer meanwhile: theirs is as good as ours.
        Err(_) if dest.is_dir() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(ImageError::io(dest, e));
        }
    }
    log::info!("unpacked layer {diff_id} into {}", dest.display());
    Ok(dest)
}

/// Where the layer with this diff_id lives. Named by hex alone: overlayfs separates lower
/// dirs with ':', so a `sha256:` in the path would need escaping in every mount.
pub fn layer_path(layers_dir: &Path, diff_id: &str) -> Result<PathBuf> {
    let hex = super::blobs::hex_of(diff_id).ok_or_else(|| ImageError::InvalidReference {
        reference: diff_id.to_string(),
        reason: "layer diff_id must be sha256: and 64 lowercase hex digits",
    })?;
    Ok(layers_dir.join(hex))
}

fn unpack_verified(dir: &Path, blobs: &Blobs, blob: &str, diff_id: &str) -> Result<()> {
    let file = blobs.open_blob(blob)?;
    let blob_path = blobs.path(blob).unwrap_or_default();
    let decoded = compression::decompress(BufReader::with_capacity(256 * 1024, file))
        .map_err(|e| ImageError::io(&blob_path, e))?;
    let (_, reader) = decoded.map_err(|format| ImageError::UnsupportedCompression {
        layer: diff_id.to_string(),
        format,
    })?;
    let mut hashing = HashingReader::new(reader);
    extract(&mut hashing, dir, diff_id)?;
    let (actual, _) = hashing.finish().map_err(|e| ImageError::Tar {
        file: blob_path,
        what: format!("layer {diff_id}"),
        source: e,
    })?;
    if actual != diff_id {
        return Err(ImageError::DigestMismatch {
            what: format!("layer {blob} (uncompressed)"),
            expected: diff_id.to_string(),
            actual,
        });
    }
    // One syncfs instead of an fsync per file: the rename that follows must not become
    // durable before the content.
    let root = File::open(dir).map_err(|e| ImageError::io(dir, e))?;
    nix::unistd::syncfs(root.as_raw_fd()).map_err(|e| ImageError::io(dir, e.into()))
}

/// Extracts a layer tar stream into the existing directory `dest`; `layer` names the layer
/// in errors. Stops at the first unsafe or failing entry.
pub fn extract(reader: impl Read, dest: &Path, layer: &str) -> Result<()> {
    let root = open_path_dir(dest)?;
    let mut x = Extractor { root, layer, deferred_dirs: Vec::new(), last: None };
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| x.tar_error(e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| x.tar_error(e))?;
        x.entry(&mut entry)?;
    }
    // Directory times last: creating their children changed them.
    for (comps, mtime, name) in x.deferred_dirs.iter().rev() {
        let fd = x.open_dir(comps, false, name)?;
        futimens(fd.as_raw_fd(), mtime, mtime).map_err(|e| x.failed(name, e.into()))?;
    }
    Ok(())
}

struct Extractor<'a> {
    root: OwnedFd,
    layer: &'a str,
    deferred_dirs: Vec<(Vec<OsString>, TimeSpec, String)>,
    /// The entry read last: a header that cannot be read is named by what came before it.
    last: Option<String>,
}

/// What one header says about ownership, permissions and time.
struct Meta {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: TimeSpec,
}

impl Extractor<'_> {
    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let raw_name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        self.last = Some(raw_name.clone());
        let path = entry.path().map_err(|e| self.failed(&raw_name, e))?.into_owned();
        let name = path.display().to_string();
        let kind = entry.header().entry_type();
        if matches!(kind, EntryType::XGlobalHeader | EntryType::XHeader) {
            return Ok(());
        }
        let comps = self.components(&path, &name)?;
        let meta = self.meta(entry.header(), &name)?;
        let Some((base, parent_comps)) = comps.split_last() else {
            // The layer root itself ("./"): only its metadata matters.
            if kind == EntryType::Directory {
                self.apply_fd_meta(&self.root, &meta, &name)?;
                self.deferred_dirs.push((Vec::new(), meta.mtime, name));
            }
            return Ok(());
        };
        let parent = self.open_dir(parent_comps, true, &name)?;
        let pfd = parent.as_raw_fd();

        if let Some(hidden) = base.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(pfd, base, OsStr::from_bytes(hidden), &name);
        }
        match kind {
            EntryType::Directory => {
                if !self.is_dir(pfd, base, &name)? {
                    self.remove_existing(pfd, base, &name)?;
                    mkdirat(Some(pfd), base.as_os_str(), Mode::from_bits_truncate(0o700))
                        .map_err(|e| self.failed(&name, e.into()))?;
                }
                let mut all = parent_comps.to_vec();
                all.push(base.clone());
                let fd = self.open_dir(&all, false, &name)?;
                self.apply_fd_meta(&fd, &meta, &name)?;
                self.set_xattrs(&fd, entry, &name)?;
                self.deferred_dirs.push((all, meta.mtime, name));
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.remove_existing(pfd, base, &name)?;
                // O_LARGEFILE: else 32-bit targets (armv7) stop writing at 2 GiB (EFBIG).
                let flags = OFlag::O_WRONLY
                    | OFlag::O_LARGEFILE
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC;
                let raw =
                    openat(Some(pfd), base.as_os_str(), flags, Mode::from_bits_truncate(0o600))
                        .map_err(|e| self.failed(&name, e.into()))?;
                // SAFETY: openat just returned this descriptor and nothing else owns it.
                let mut file = unsafe { File::from_raw_fd(raw) };
                let size = entry.size();
                let copied = io::copy(entry, &mut file).map_err(|e| self.failed(&name, e))?;
                if copied != size {
                    // The entry reader stops quietly at the end of a truncated stream.
                    return Err(self.failed(&name, io::ErrorKind::UnexpectedEof.into()));
                }
                let fd = OwnedFd::from(file);
                self.apply_fd_meta(&fd, &meta, &name)?;
                self.set_xattrs(&fd, entry, &name)?;
                futimens(fd.as_raw_fd(), &meta.mtime, &meta.mtime)
                    .map_err(|e| self.failed(&name, e.into()))?;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.failed(&name, e))?
                    .ok_or_else(|| self.failed(&name, io::ErrorKind::InvalidData.into()))?
                    .into_owned();
                self.remove_existing(pfd, base, &name)?;
                // The target is never followed by the extractor, whatever it says.
                symlinkat(target.as_os_str(), Some(pfd), base.as_os_str())
                    .map_err(|e| self.failed(&name, e.into()))?;
                self.apply_at_meta(pfd, base, &meta, false, &name)?;
            }
            EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| self.failed(&name, e))?
                    .ok_or_else(|| self.failed(&name, io::ErrorKind::InvalidData.into()))?
                    .into_owned();
                self.hardlink(pfd, base, &target, &name)?;
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let sflag = match kind {
                    EntryType::Char => SFlag::S_IFCHR,
                    EntryType::Block => SFlag::S_IFBLK,
                    _ => SFlag::S_IFIFO,
                };
                let (major, minor) =
                    device_numbers(entry.header()).map_err(|e| self.failed(&name, e))?;
                let dev = nix::sys::stat::makedev(u64::from(major), u64::from(minor));
                self.remove_existing(pfd, base, &name)?;
                mknodat(Some(pfd), base.as_os_str(), sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| self.failed(&name, e.into()))?;
                self.apply_at_meta(pfd, base, &meta, true, &name)?;
            }
            other => log::warn!("layer {}: skipping {name:?} of tar type {other:?}", self.layer),
        }
        Ok(())
    }

    /// The entry's path as components below the root; refuses absolute paths and `..`.
    fn components(&self, path: &Path, name: &str) -> Result<Vec<OsString>> {
        let mut comps = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(n) => comps.push(n.to_os_string()),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.refuse(name, Unsafe::Absolute))
                }
                Component::ParentDir => return Err(self.refuse(name, Unsafe::DotDot)),
            }
        }
        Ok(comps)
    }

    /// Opens the directory at `comps` below the root without following any symlink,
    /// creating missing directories when `create` (tar layers may omit parents).
    fn open_dir(&self, comps: &[OsString], create: bool, name: &str) -> Result<OwnedFd> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut cur = self.root.try_clone().map_err(|e| self.failed(name, e))?;
        for (i, comp) in comps.iter().enumerate() {
            let mut attempt = openat(Some(cur.as_raw_fd()), comp.as_os_str(), flags, Mode::empty());
            if attempt == Err(Errno::ENOENT) && create {
                mkdirat(Some(cur.as_raw_fd()), comp.as_os_str(), Mode::from_bits_truncate(0o755))
                    .map_err(|e| self.failed(name, e.into()))?;
                attempt = openat(Some(cur.as_raw_fd()), comp.as_os_str(), flags, Mode::empty());
            }
            let raw = attempt.map_err(|e| match e {
                Errno::ELOOP | Errno::ENOTDIR => {
                    let component = comps[..=i]
                        .iter()
                        .map(|c| c.to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/");
                    self.refuse(name, Unsafe::ThroughLink { component })
                }
                e => self.failed(name, e.into()),
            })?;
            // SAFETY: openat just returned this descriptor and nothing else owns it.
            cur = unsafe { OwnedFd::from_raw_fd(raw) };
        }
        Ok(cur)
    }

    fn is_dir(&self, pfd: RawFd, base: &OsStr, name: &str) -> Result<bool> {
        match file_type_at(pfd, base) {
            Ok(file_type) => Ok(file_type == libc::S_IFDIR),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(self.failed(name, e.into())),
        }
    }

    /// Removes whatever an earlier entry of this layer left at `base`, as tar does.
    fn remove_existing(&self, pfd: RawFd, base: &OsStr, name: &str) -> Result<()> {
        if self.is_dir(pfd, base, name)? {
            // remove_dir_all does not follow symlinks; /proc/self/fd/N is the directory
            // already reached safely.
            let path = Path::new(&format!("/proc/self/fd/{pfd}")).join(base);
            return std::fs::remove_dir_all(path).map_err(|e| self.failed(name, e));
        }
        match unlinkat(Some(pfd), base, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(self.failed(name, e.into())),
        }
    }

    fn whiteout(&self, pfd: RawFd, base: &OsStr, hidden: &OsStr, name: &str) -> Result<()> {
        if base == OPAQUE_MARKER {
            return set_xattr(pfd, OPAQUE_XATTR, b"y").map_err(|e| self.failed(name, e));
        }
        if hidden.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other `.wh..wh.` names are aufs bookkeeping (e.g. hardlink dirs): not content.
            log::debug!("layer {}: ignoring aufs metadata {name:?}", self.layer);
            return Ok(());
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.as_bytes().contains(&b'/')
        {
            return Err(self.refuse(name, Unsafe::DotDot));
        }
        self.remove_existing(pfd, hidden, name)?;
        mknodat(Some(pfd), hidden, SFlag::S_IFCHR, Mode::empty(), nix::sys::stat::makedev(0, 0))
            .map_err(|e| self.failed(name, e.into()))
    }

    fn hardlink(&self, pfd: RawFd, base: &OsStr, target: &Path, name: &str) -> Result<()> {
        let target_name = target.display().to_string();
        let outside = || self.refuse(name, Unsafe::HardlinkOutside { target: target_name.clone() });
        let mut comps = Vec::new();
        for c in target.components() {
            match c {
                Component::Normal(n) => comps.push(n.to_os_string()),
                Component::CurDir => {}
                _ => return Err(outside()),
            }
        }
        let Some((tbase, tparent)) = comps.split_last() else { return Err(outside()) };
        let tdir = self.open_dir(tparent, false, name).map_err(|e| match e {
            ImageError::UnsafeEntry { .. } => outside(),
            _ => self.refuse(name, Unsafe::HardlinkMissing { target: target_name.clone() }),
        })?;
        // linkat without AT_SYMLINK_FOLLOW links a symlink itself, never what it points to.
        match file_type_at(tdir.as_raw_fd(), tbase) {
            Ok(_) => {}
            Err(Errno::ENOENT) => {
                return Err(self.refuse(name, Unsafe::HardlinkMissing { target: target_name }))
            }
            Err(e) => return Err(self.failed(name, e.into())),
        }
        self.remove_existing(pfd, base, name)?;
        linkat(Some(tdir.as_raw_fd()), tbase.as_os_str(), Some(pfd), base, AtFlags::empty())
            .map_err(|e| self.failed(name, e.into()))
    }

    fn meta(&self, header: &tar::Header, name: &str) -> Result<Meta> {
        let old = header.as_old();
        let field =
            |raw: &[u8], r: io::Result<u64>| numeric(raw, r).map_err(|e| self.failed(name, e));
        let uid = field(&old.uid, header.uid())?;
        let gid = field(&old.gid, header.gid())?;
        let mode = field(&old.mode, header.mode().map(u64::from))? as u32;
        let mtime = field(&old.mtime, header.mtime())?;
        let id = |v: u64| {
            u32::try_from(v).map_err(|_| self.failed(name, io::ErrorKind::InvalidData.into()))
        };
        Ok(Meta {
            uid: Uid::from_raw(id(uid)?),
            gid: Gid::from_raw(id(gid)?),
            mode: Mode::from_bits_truncate(mode & 0o7777),
            // time_t has 32 bits on armv7 glibc: later times are clamped to 2038 there.
            mtime: TimeSpec::new(libc::time_t::try_from(mtime).unwrap_or(libc::time_t::MAX), 0),
        })
    }

    /// Owner first, then mode: chown clears setuid and setgid bits.
    fn apply_fd_meta(&self, fd: &OwnedFd, meta: &Meta, name: &str) -> Result<()> {
        fchown(fd.as_raw_fd(), Some(meta.uid), Some(meta.gid))
            .and_then(|()| fchmod(fd.as_raw_fd(), meta.mode))
            .map_err(|e| self.failed(name, e.into()))
    }

    fn apply_at_meta(
        &self,
        pfd: RawFd,
        base: &OsStr,
        meta: &Meta,
        chmod: bool,
        name: &str,
    ) -> Result<()> {
        fchownat(Some(pfd), base, Some(meta.uid), Some(meta.gid), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| self.failed(name, e.into()))?;
        if chmod {
            // Only for device nodes and fifos, never symlinks (chmod would follow them).
            fchmodat(Some(pfd), base, meta.mode, FchmodatFlags::FollowSymlink)
                .map_err(|e| self.failed(name, e.into()))?;
        }
        utimensat(Some(pfd), base, &meta.mtime, &meta.mtime, UtimensatFlags::NoFollowSymlink)
            .map_err(|e| self.failed(name, e.into()))
    }

    /// PAX `SCHILY.xattr.*` records. Only user.* and file capabilities: other namespaces
    /// (trusted.overlay.* in particular) would let a layer steer overlayfs itself.
    fn set_xattrs<R: Read>(
        &self,
        fd: &OwnedFd,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<()> {
        let Some(exts) = entry.pax_extensions().map_err(|e| self.failed(name, e))? else {
            return Ok(());
        };
        for ext in exts {
            let ext = ext.map_err(|e| self.failed(name, e))?;
            let Ok(key) = ext.key() else { continue };
            let Some(attr) = key.strip_prefix("SCHILY.xattr.") else { continue };
            if !(attr.starts_with("user.") || attr == "security.capability") {
                log::debug!("layer {}: {name:?}: not restoring xattr {attr}", self.layer);
                continue;
            }
            if let Err(e) = set_xattr(fd.as_raw_fd(), attr, ext.value_bytes()) {
                log::warn!("layer {}: {name:?}: cannot set xattr {attr}: {e}", self.layer);
            }
        }
        Ok(())
    }

    fn refuse(&self, entry: &str, reason: Unsafe) -> ImageError {
        ImageError::UnsafeEntry { layer: self.layer.to_string(), entry: entry.to_string(), reason }
    }

    fn failed(&self, entry: &str, source: io::Error) -> ImageError {
        ImageError::Unpack { layer: self.layer.to_string(), entry: entry.to_string(), source }
    }

    fn tar_error(&self, source: io::Error) -> ImageError {
        ImageError::LayerTar { layer: self.layer.to_string(), after: self.last.clone(), source }
    }
}

/// A numeric header field read as Go's archive/tar (docker, containerd) reads it: blank
/// (all NULs or spaces; Python's tarfile leaves a FIFO's device numbers so) is 0. `parsed`
/// is the tar crate's reading of the same field `raw`, which refuses blank fields.
fn numeric<T: Default>(raw: &[u8], parsed: io::Result<T>) -> io::Result<T> {
    if raw.iter().all(|&b| b == 0 || b == b' ') {
        return Ok(T::default());
    }
    parsed
}

/// A device entry's major and minor numbers; an old V7 header has no such fields: 0 and 0.
fn device_numbers(header: &tar::Header) -> io::Result<(u32, u32)> {
    let (major, minor) = match (header.as_ustar(), header.as_gnu()) {
        (Some(h), _) => (h.dev_major, h.dev_minor),
        (None, Some(h)) => (h.dev_major, h.dev_minor),
        (None, None) => return Ok((0, 0)),
    };
    let major = numeric(&major, header.device_major().map(Option::unwrap_or_default))?;
    let minor = numeric(&minor, header.device_minor().map(Option::unwrap_or_default))?;
    Ok((major, minor))
}

fn open_path_dir(dir: &Path) -> Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
    let raw =
        nix::fcntl::open(dir, flags, Mode::empty()).map_err(|e| ImageError::io(dir, e.into()))?;
    // SAFETY: open just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The file type bits (`S_IFMT`) of `base` in `dir`, not following a symlink. fstatat64, not
/// nix's fstatat: on 32-bit glibc (armv7) that one fails with EOVERFLOW for files of 2 GiB or
/// more.
fn file_type_at(dir: RawFd, base: &OsStr) -> nix::Result<libc::mode_t> {
    let mut st = MaybeUninit::<libc::stat64>::uninit();
    // SAFETY: a NUL-terminated name and a buffer of the right type.
    let rc = base.with_nix_path(|name| unsafe {
        libc::fstatat64(dir, name.as_ptr(), st.as_mut_ptr(), libc::AT_SYMLINK_NOFOLLOW)
    })?;
    Errno::result(rc)?;
    // SAFETY: fstatat64 succeeded, so it filled the buffer in.
    Ok(unsafe { st.assume_init() }.st_mode & libc::S_IFMT)
}

fn set_xattr(fd: RawFd, attr: &str, value: &[u8]) -> io::Result<()> {
    let cname = CString::new(attr).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fd is an open descriptor; cname is NUL-terminated; value is a valid slice whose
    // length is passed alongside it.
    let rc = unsafe { libc::fsetxattr(fd, cname.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
