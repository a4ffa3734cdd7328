//! Reading a file the user named (the system file, an env file) without hanging or running
//! out of memory: only a regular file, and only up to a limit.

use std::io::Read;
use std::path::Path;

/// The bytes of the regular file at `path`, at most `max` of them. A FIFO (the read would
/// wait for a writer), a socket, a device (`/dev/zero` never ends), a directory or a file
/// over `max` is an error whose text says which; a missing file is `NotFound`.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileTypeExt;
    let kind = std::fs::metadata(path)?.file_type();
    let what = if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a FIFO")
    } else if kind.is_socket() {
        Some("a socket")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else {
        Some("not a file")
    };
    if let Some(what) = what {
        return Err(std::io::Error::other(format!("{what}, not a regular file")));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {}", size(max))));
    }
    Ok(bytes)
}

/// Why a file cannot be read, in words: `does not exist`, `is a directory, not a regular
/// file`, `cannot be read: permission denied`.
pub fn why_unreadable(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".into(),
        std::io::ErrorKind::Other => format!("is {e}"),
        _ => format!("cannot be read: {e}"),
    }
}

fn size(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_under_the_limit() {
        let dir = std::env::temp_dir().join(format!("as-fsread-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a");
        std::fs::write(&f, "12345").unwrap();
        assert_eq!(read_regular(&f, 5).unwrap(), b"12345");
        let e = read_regular(&f, 4).unwrap_err();
        assert_eq!(why_unreadable(&e), "is larger than 4 bytes");
        let e = read_regular(&dir, 4).unwrap_err();
        assert_eq!(why_unreadable(&e), "is a directory, not a regular file");
        let e = read_regular(Path::new("/dev/zero"), 4).unwrap_err();
        assert_eq!(why_unreadable(&e), "is a device, not a regular file");
        let e = read_regular(&dir.join("none"), 4).unwrap_err();
        assert_eq!(why_unreadable(&e), "does not exist");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
