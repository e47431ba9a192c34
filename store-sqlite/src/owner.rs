//! Who holds a lease, written into its row so that a process on the same machine can prove the
//! holder dead and take the lease at once instead of waiting for it to expire.
//!
//! An owner reads `SCOPE/PID/START/UNIQUE`: the scope is the boot (`boot_id`) and the pid
//! namespace in which the pid names the process, the start is the process's start time in
//! clock ticks after boot (field 22 of `/proc/PID/stat`), so that a pid used again by another
//! process is not taken for the holder. The holder is dead when, in this same scope, its pid is
//! gone, is a zombie, or belongs to a process started at another time. Anything else — another
//! machine or container, an owner written without a scope (older code, no `/proc`) — proves
//! nothing, and the lease is left to expire.

use std::path::Path;

use uuid::Uuid;

/// A new owner id for a lease taken by this process.
pub(crate) fn new_owner() -> String {
    let unique = Uuid::new_v4();
    let pid = std::process::id();
    match (scope(), process_start(pid)) {
        (Some(scope), Some((start, _))) => format!("{scope}/{pid}/{start}/{unique}"),
        _ => unique.to_string(),
    }
}

/// Whether `owner` is provably a process that runs no more (see the module's notes).
pub(crate) fn is_provably_dead(owner: &str) -> bool {
    let parts: Vec<&str> = owner.split('/').collect();
    let [owner_scope, pid, start, _unique] = parts.as_slice() else {
        return false;
    };
    let (Ok(pid), Ok(start)) = (pid.parse::<u32>(), start.parse::<u64>()) else {
        return false;
    };
    if scope().as_deref() != Some(*owner_scope) {
        return false;
    }
    match process_start(pid) {
        Some((started, state)) => started != start || state == 'Z' || state == 'X',
        // No such process, unless its entry exists and only could not be read.
        None => !Path::new(&format!("/proc/{pid}")).exists(),
    }
}

/// The boot and the pid namespace of this process: the scope in which a pid names one process.
fn scope() -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    // `pid:[4026531836]`: the namespace's inode.
    let namespace = std::fs::read_link("/proc/self/ns/pid").ok()?;
    let namespace = namespace.to_str()?;
    let inode = namespace.strip_prefix("pid:[")?.strip_suffix(']')?;
    Some(format!("{}:{inode}", boot.trim()))
}

/// The start time (clock ticks after boot) and the state letter of process `pid`.
fn process_start(pid: u32) -> Option<(u64, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2, the command name, is in parentheses and may hold anything, `)` included: the
    // fields after it start after its last `)`. Field 3 is the state, field 22 the start time.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((start, state))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_a_gone_or_reused_pid_is_dead() {
        let owner = new_owner();
        let parts: Vec<&str> = owner.split('/').collect();
        let [scope, pid, start, unique] = parts.as_slice() else {
            panic!("no scope in {owner} (is /proc mounted?)")
        };
        assert!(!is_provably_dead(&owner), "{owner}");
        // Our pid with another start time: a process that used the pid before us.
        let reused = format!(
            "{scope}/{pid}/{}/{unique}",
            start.parse::<u64>().unwrap() + 1
        );
        assert!(is_provably_dead(&reused), "{reused}");
        // A pid above the kernel's limit (2^22) has no process.
        let gone = format!("{scope}/{}/{start}/{unique}", 1u32 << 23);
        assert!(is_provably_dead(&gone), "{gone}");
    }

    #[test]
    fn an_owner_of_another_scope_or_without_one_proves_nothing() {
        let pid = 1u32 << 23;
        assert!(!is_provably_dead(&format!("another-boot:1/{pid}/1/u")));
        assert!(!is_provably_dead(&Uuid::new_v4().to_string()));
        assert!(!is_provably_dead("a/b/c/d"));
        assert!(!is_provably_dead(""));
    }
}
