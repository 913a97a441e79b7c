//! Runs queued hook jobs: at most `CONCURRENCY` at once, each killed at
//! its timeout, its exit status and the start of its stderr logged.

use std::{process::Stdio, sync::Arc, time::Instant};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    process::Command,
    sync::{Semaphore, mpsc},
};

use super::Job;

/// Hook runs waiting to start; more are dropped (and counted).
pub(super) const QUEUE: usize = 64;
pub(super) const CONCURRENCY: usize = 4;
/// Bytes of a hook's stdout/stderr kept for the log.
const OUTPUT_KEPT: usize = 2048;

pub(super) async fn worker(mut rx: mpsc::Receiver<Job>, dry_run: bool) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    while let Some(job) = rx.recv().await {
        if dry_run {
            let env: Vec<String> = job.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!(
                "hook {} ({}): dry run, would run {:?} with {}",
                job.hook.name,
                job.event,
                job.hook.argv,
                env.join(" ")
            );
            continue;
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        tokio::spawn(async move {
            run_one(job).await;
            drop(permit);
        });
    }
}

async fn run_one(job: Job) {
    let h = &job.hook;
    let started = Instant::now();
    let mut cmd = Command::new(&h.argv[0]);
    cmd.args(&h.argv[1..])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(job.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "hook {} ({}): cannot start {}: {e}",
                h.name, job.event, h.argv[0]
            );
            return;
        }
    };
    let pgid = child.id();
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let json = job.json.clone();
    let io = async {
        if let Some(s) = stdin.as_mut() {
            // A hook that does not read its stdin is fine.
            let _ = s.write_all(json.as_bytes()).await;
            let _ = s.write_all(b"\n").await;
        }
        drop(stdin.take());
        let (out, err) = tokio::join!(read_bounded(stdout.as_mut()), read_bounded(stderr.as_mut()));
        let status = child.wait().await;
        (out, err, status)
    };
    match tokio::time::timeout(h.timeout(), io).await {
        Ok((out, err, status)) => {
            let ms = started.elapsed().as_millis();
            let code = match status {
                Ok(s) if s.success() => {
                    eprintln!(
                        "hook {} ({}): ok in {ms} ms{}",
                        h.name,
                        job.event,
                        if out.is_empty() {
                            String::new()
                        } else {
                            format!("; stdout: {}", one_line(&out))
                        }
                    );
                    return;
                }
                Ok(s) => s
                    .code()
                    .map(|c| format!("exit status {c}"))
                    .unwrap_or_else(|| format!("{s}")),
                Err(e) => format!("wait failed: {e}"),
            };
            eprintln!(
                "hook {} ({}): failed, {code} after {ms} ms; stderr: {}",
                h.name,
                job.event,
                one_line(&err)
            );
        }
        Err(_) => {
            if let Some(pid) = pgid {
                // SAFETY: signals the hook's own process group.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
            eprintln!(
                "hook {} ({}): killed after its {} timeout",
                h.name, job.event, h.timeout
            );
        }
    }
}

/// Reads to the end, keeping the first OUTPUT_KEPT bytes.
async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(r: Option<&mut R>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(r) = r else {
        return kept;
    };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

fn one_line(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let s = s.trim();
    if s.is_empty() {
        "(empty)".into()
    } else {
        s.to_string()
    }
}
