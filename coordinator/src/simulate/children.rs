//! The simulation's child processes, owned so that none outlives it: each leads a process group
//! of its own (ended whole, anything it started included), every exit path — success, error,
//! timeout, SIGINT/SIGTERM — ends them, and dropping the owner ends any still running.

use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Set by SIGINT or SIGTERM; a second signal of either kind ends the process at once.
#[derive(Clone)]
pub struct Interrupted(Arc<AtomicBool>);

impl Interrupted {
    /// Installs the handlers (replacing the default "die now", so that cleanup can run).
    pub fn install() -> anyhow::Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // order matters: the conditional exit sees the flag before this signal sets it
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&flag))
                .context("installing a signal handler")?;
            signal_hook::flag::register(sig, Arc::clone(&flag))
                .context("installing a signal handler")?;
        }
        Ok(Self(flag))
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// An error when a signal arrived (checked between steps that must not be cut short).
    pub fn check(&self) -> anyhow::Result<()> {
        if self.is_set() {
            anyhow::bail!(
                "interrupted (SIGINT/SIGTERM): every child ended, temporary kits removed"
            );
        }
        Ok(())
    }
}

/// Child processes, each leading a process group of its own: a terminal's Ctrl-C or a signal to
/// this process reaches only this process, which then ends each group whole.
#[derive(Default)]
pub struct Children {
    procs: Vec<Child>,
}

impl Children {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts `cmd` in a new process group; returns its index.
    pub fn spawn(&mut self, cmd: &mut Command) -> std::io::Result<usize> {
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        self.procs.push(cmd.spawn()?);
        Ok(self.procs.len() - 1)
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Child {
        &mut self.procs[i]
    }

    /// Runs `cmd` to its end as one of these children, ending it early (with an error) on an
    /// interruption or at `deadline`.
    pub fn run(
        &mut self,
        cmd: &mut Command,
        stop: &Interrupted,
        deadline: Instant,
    ) -> anyhow::Result<ExitStatus> {
        let i = self.spawn(cmd)?;
        loop {
            if let Some(status) = self.procs[i].try_wait()? {
                return Ok(status);
            }
            stop.check()?;
            if Instant::now() > deadline {
                anyhow::bail!("the deadline passed");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Ends every child that is still running (its whole process group) and reaps them all.
    pub fn end_all(&mut self) {
        for c in &mut self.procs {
            if let Ok(None) = c.try_wait() {
                #[cfg(unix)]
                // SAFETY: kill(2) on the group this running, unreaped child leads; it touches no
                // memory of ours.
                unsafe {
                    libc::kill(-(c.id() as i32), libc::SIGKILL);
                }
                let _ = c.kill();
            }
            let _ = c.wait();
        }
        self.procs.clear();
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        if !self.procs.is_empty() {
            self.end_all();
        }
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // a reaped child's pid no longer exists (signal 0 only checks)
        unsafe { libc::kill(pid as i32, 0) == 0 }
    }

    #[test]
    fn children_lead_their_own_groups_and_end_when_dropped() {
        let mut c = Children::new();
        let a = c.spawn(Command::new("sleep").arg("30")).unwrap();
        let b = c.spawn(Command::new("sleep").arg("30")).unwrap();
        let (pa, pb) = (c.get_mut(a).id(), c.get_mut(b).id());
        let (ga, gb) = unsafe { (libc::getpgid(pa as i32), libc::getpgid(pb as i32)) };
        assert_eq!((ga, gb), (pa as i32, pb as i32));
        assert_ne!(ga, unsafe { libc::getpgrp() });
        drop(c);
        assert!(!alive(pa) && !alive(pb));
    }

    #[test]
    fn a_run_is_cut_short_by_its_deadline() {
        let mut c = Children::new();
        let stop = Interrupted(Arc::new(AtomicBool::new(false)));
        let t = Instant::now();
        let e = c
            .run(
                Command::new("sleep").arg("30"),
                &stop,
                t + Duration::from_millis(300),
            )
            .unwrap_err();
        assert!(e.to_string().contains("deadline"), "{e}");
        let ok = c
            .run(
                &mut Command::new("true"),
                &stop,
                Instant::now() + Duration::from_secs(30),
            )
            .unwrap();
        assert!(ok.success());
        stop.0.store(true, Ordering::SeqCst);
        let e = c
            .run(
                Command::new("sleep").arg("30"),
                &stop,
                Instant::now() + Duration::from_secs(30),
            )
            .unwrap_err();
        assert!(e.to_string().contains("interrupted"), "{e}");
        drop(c);
        assert!(t.elapsed() < Duration::from_secs(10));
    }
}
