//! `lobsentry launch`: a local cluster of `lobsentry run` processes on free loopback ports.
//!
//! Writes a hostfile, starts `-n` processes with `--hostfile F -n P -p I`, forwards SIGINT and SIGTERM
//! to them, and stops every process as soon as one fails, naming it and its exit status.

use crate::error::Error;
use clap::Args;
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
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

static SIGNAL: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int) {
    SIGNAL.store(sig, Ordering::SeqCst);
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
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        _ => "unknown status".into(),
    }
}

fn kill_all(children: &mut [(usize, Child)], sig: libc::c_int) {
    for (_, child) in children.iter_mut() {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY-free: libc::kill on our own child's pid.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid, sig);
            }
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
    #[allow(unsafe_code)]
    // SAFETY: installing a handler that only stores into an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
    }
    let exe = std::env::current_exe().map_err(|e| Error::Io(format!("cannot find the lobsentry binary: {e}")))?;
    let mut children: Vec<(usize, Child)> = Vec::new();
    for i in 0..args.processes {
        let mut command = Command::new(&exe);
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
                kill_all(&mut children, libc::SIGTERM);
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
        let sig = SIGNAL.swap(0, Ordering::SeqCst);
        if sig != 0 {
            kill_all(&mut children, sig);
        }
        let mut i = 0;
        while i < children.len() {
            match children[i].1.try_wait() {
                Ok(Some(status)) => {
                    let (index, _) = children.remove(i);
                    if !status.success() && failure.is_none() {
                        failure = Some(format!("process {index} failed ({})", describe(status)));
                        kill_all(&mut children, libc::SIGTERM);
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    let (index, _) = children.remove(i);
                    failure.get_or_insert(format!("process {index}: cannot wait: {e}"));
                    kill_all(&mut children, libc::SIGTERM);
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
