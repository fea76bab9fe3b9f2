//! `lobsentry launch`: a local cluster of `lobsentry run` processes on free loopback ports.
//!
//! Writes a hostfile, starts `-n` processes with `--hostfile F -n P -p I`, forwards SIGINT and SIGTERM
//! to them, and stops every process as soon as one fails, naming it and its exit status.

use crate::error::Error;
use clap::Args;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `launch`.
#[derive(Debug, Args)]
pub struct LaunchArgs {
    /// Processes to start.
    #[arg(short = 'n', long = "processes", default_value_t = 2)]
    pub processes: usize,
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Where to write the hostfile (default: a temporary file).
    #[arg(long)]
    pub hostfile: Option<std::path::PathBuf>,
    /// Arguments for every `lobsentry run` (after `--`).
    #[arg(last = true)]
    pub run_args: Vec<String>,
}

/// SIGINT and SIGTERM, as flags set by signal-hook's handlers.
#[derive(Default)]
struct Signals {
    interrupt: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals, Error> {
        let signals = Signals::default();
        #[cfg(unix)]
        {
            use signal_hook::consts::{SIGINT, SIGTERM};
            signal_hook::flag::register(SIGINT, signals.interrupt.clone())
                .and_then(|_| signal_hook::flag::register(SIGTERM, signals.terminate.clone()))
                .map_err(|e| Error::Io(format!("cannot handle signals: {e}")))?;
        }
        Ok(signals)
    }

    /// The signal received since the last call, to forward.
    fn take(&self) -> Option<Stop> {
        if self.terminate.swap(false, Ordering::SeqCst) {
            Some(Stop::Terminate)
        } else if self.interrupt.swap(false, Ordering::SeqCst) {
            Some(Stop::Interrupt)
        } else {
            None
        }
    }
}

/// A signal to forward to the processes.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Interrupt,
    Terminate,
}

/// Free loopback ports (bound and released; the OS does not hand them out again at once).
pub fn free_ports(n: usize) -> Result<Vec<u16>, Error> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Io(format!("cannot find a free port: {e}")))?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Io(e.to_string()))
}

fn describe(status: ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let (None, Some(sig)) = (status.code(), status.signal()) {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => "unknown status".into(),
    }
}

/// Asks every process to stop (it flushes its sinks and reports); where signals do not exist, ends it.
fn kill_all(children: &mut [(usize, Child)], stop: Stop) {
    for (_, child) in children.iter_mut() {
        #[cfg(unix)]
        if let Ok(pid) = i32::try_from(child.id()) {
            let sig = match stop {
                Stop::Interrupt => libc::SIGINT,
                Stop::Terminate => libc::SIGTERM,
            };
            #[allow(unsafe_code)]
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid, sig);
            }
        }
        #[cfg(not(unix))]
        {
            let _ = stop;
            let _ = child.kill();
        }
    }
}

/// Runs the cluster until every process exits.
pub fn run(args: LaunchArgs) -> Result<(), Error> {
    if args.processes == 0 || args.workers == 0 {
        return Err(Error::Config(vec!["launch: -n and -w must be positive".into()]));
    }
    if args
        .run_args
        .iter()
        .any(|a| a == "--hostfile" || a == "-n" || a == "-p" || a == "--processes" || a == "--process")
    {
        return Err(Error::Config(vec!["launch: pass the run arguments without --hostfile, -n or -p".into()]));
    }
    let ports = free_ports(args.processes)?;
    let hostfile = match &args.hostfile {
        Some(p) => p.clone(),
        None => std::env::temp_dir().join(format!("lobsentry-hostfile-{}", std::process::id())),
    };
    let text: String = ports.iter().map(|p| format!("127.0.0.1:{p}\n")).collect();
    std::fs::write(&hostfile, text).map_err(|e| Error::Io(format!("{}: {e}", hostfile.display())))?;
    let signals = Signals::install()?;
    let exe = std::env::current_exe().map_err(|e| Error::Io(format!("cannot find the lobsentry binary: {e}")))?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for i in 0..args.processes {
        let mut command = Command::new(&exe);
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::process::CommandExt;
            #[allow(unsafe_code)]
            // SAFETY: prctl only sets a flag of the child; no allocation between fork and exec.
            unsafe {
                command.pre_exec(|| {
                    // A child dies with the launcher, whatever kills the launcher.
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
        }
        let child = command
            .arg("run")
            .args(&args.run_args)
            .arg("--hostfile")
            .arg(&hostfile)
            .args(["-n", &args.processes.to_string(), "-p", &i.to_string(), "-w", &args.workers.to_string()])
            .spawn();
        match child {
            Ok(c) => children.push((i, c)),
            Err(e) => {
                kill_all(&mut children, Stop::Terminate);
                return Err(Error::Io(format!("cannot start process {i}: {e}")));
            }
        }
    }
    eprintln!(
        "lobsentry launch: {} processes x {} workers, hostfile {}",
        args.processes,
        args.workers,
        hostfile.display()
    );
    let mut failure: Option<String> = None;
    while !children.is_empty() {
        if let Some(stop) = signals.take() {
            kill_all(&mut children, stop);
        }
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (index, _) = children.remove(i);
                    if !status.success() && failure.is_none() {
                        failure = Some(format!("process {index} failed ({})", describe(status)));
                        kill_all(&mut children, Stop::Terminate);
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let (index, _) = children.remove(i);
                    failure.get_or_insert(format!("process {index}: cannot wait: {e}"));
                    kill_all(&mut children, Stop::Terminate);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if args.hostfile.is_none() {
        let _ = std::fs::remove_file(&hostfile);
    }
    match failure {
        Some(f) => Err(Error::Data(format!("launch: {f}; stopped the other processes"))),
        None => Ok(()),
    }
}
