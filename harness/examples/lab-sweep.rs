//! Remove debug mounts (`/run/netns/pc-<pid>-<seq>-<host>`) left by lab runs that
//! died (SIGKILL while `PORTCULLIS_LAB_DEBUG=1`). Mounts of live processes stay.
//!
//! Usage: `lab-sweep` (as root); prints each removed path, exits 1 on any error.

fn main() {
    match portcullis_harness::sweep() {
        Ok(removed) => {
            for p in &removed {
                println!("removed {}", p.display());
            }
            if removed.is_empty() {
                println!("nothing to sweep");
            }
        }
        Err(errors) => {
            for e in errors {
                eprintln!("lab-sweep: {e}");
            }
            std::process::exit(1);
        }
    }
}
