//! A command's report on stdout. Rust ignores SIGPIPE (the daemon needs that for its
//! sockets), so `println!` to a reader that went away (`check … | head`) panics; [`out!`]
//! and [`outln!`] end the command quietly instead, with the status a SIGPIPE would give
//! (141). [`print_or_drop`] is for a long-running command (`up`): it keeps running and
//! stops printing.

use std::io::Write;

/// The exit status of a command whose reader went away: 128 + SIGPIPE, as a shell shows
/// for a process a SIGPIPE ended.
pub const BROKEN_PIPE_STATUS: i32 = 141;

/// Writes `args` (and a newline) to stdout; a broken pipe ends the process (see module).
pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut o = std::io::stdout().lock();
    let r = o
        .write_fmt(args)
        .and_then(|()| if newline { o.write_all(b"\n") } else { Ok(()) })
        .and_then(|()| if newline { o.flush() } else { Ok(()) });
    if let Err(e) = r {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(BROKEN_PIPE_STATUS);
        }
        // Another error (a full disk behind a redirect): said once, on stderr.
        eprintln!("cannot write the output: {e}");
        std::process::exit(74); // EX_IOERR
    }
}

/// Writes `text` to stdout; an error drops the text (the command goes on).
pub fn print_or_drop(text: &str) {
    let mut o = std::io::stdout().lock();
    let _ = o.write_all(text.as_bytes()).and_then(|()| o.flush());
}

/// `print!` that ends the command quietly when stdout's reader went away.
#[macro_export]
macro_rules! out {
    ($($t:tt)*) => { $crate::cli_out::write(format_args!($($t)*), false) };
}

/// `println!` that ends the command quietly when stdout's reader went away.
#[macro_export]
macro_rules! outln {
    () => { $crate::cli_out::write(format_args!(""), true) };
    ($($t:tt)*) => { $crate::cli_out::write(format_args!($($t)*), true) };
}
