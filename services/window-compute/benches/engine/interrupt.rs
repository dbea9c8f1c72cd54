//! What the benchmark leaves behind when it is interrupted (SIGINT from
//! `timeout --signal=INT` or Ctrl-C, SIGTERM): temporary directories and
//! the baseline database are registered here while they exist, and a
//! watcher thread removes them before the process exits with 130.

use std::path::PathBuf;
use std::sync::Mutex;

static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
/// URLs of databases to drop.
static DATABASES: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A temporary directory (removed when dropped) that is also removed on
/// interrupt.
pub fn tempdir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
    lock(&DIRS).push(dir.path().to_path_buf());
    Ok(dir)
}

/// Registers the database at `url` for dropping on interrupt.
pub fn register_database(url: &str) {
    lock(&DATABASES).push(url.to_string());
}

pub fn forget_database(url: &str) {
    lock(&DATABASES).retain(|d| d != url);
}

/// Starts the watcher thread.
pub fn watch() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("interrupt".into())
        .spawn(move || {
            rt.block_on(async {
                let mut term =
                    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    {
                        Ok(s) => s,
                        Err(e) => {
                            eprintln!("cannot watch SIGTERM: {e}");
                            return;
                        }
                    };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                eprintln!("interrupted: removing temporary state and the baseline database");
                for dir in lock(&DIRS).drain(..) {
                    match std::fs::remove_dir_all(&dir) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            eprintln!("cannot remove {}: {e}", dir.display());
                        }
                        _ => {}
                    }
                }
                let databases: Vec<String> = lock(&DATABASES).drain(..).collect();
                for url in databases {
                    if let Err(e) = mdp_e2e::schema::drop_database(&url).await {
                        eprintln!("cannot drop the database of {url}: {e}");
                    }
                }
                std::process::exit(130);
            });
        })?;
    Ok(())
}
