//! Test support: a fresh database file per test, removed with its WAL files afterwards.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)] // each test file uses a part

use std::path::{Path, PathBuf};

use decider_store_sqlite::{SqliteOptions, SqliteStore};

/// A new, unused path in the temp folder (nothing is created).
pub fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join("decider-sqlite-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "{name}-{}-{}.db",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// Removes a database file and its `-wal` and `-shm` companions.
pub fn remove_database(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        let _ = std::fs::remove_file(file);
    }
}

/// A temp database path, removed with its companions when dropped: also when the test fails.
pub struct TempDatabase(PathBuf);

impl TempDatabase {
    pub fn new(name: &str) -> Self {
        Self(temp_path(name))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A store on this file, default options.
    pub fn open(&self) -> SqliteStore {
        SqliteStore::open(&self.0).unwrap()
    }
}

impl Drop for TempDatabase {
    fn drop(&mut self) {
        remove_database(&self.0);
    }
}

pub async fn fresh_store() -> SqliteStore {
    fresh_store_with(SqliteOptions::default())
}

pub fn fresh_store_with(options: SqliteOptions) -> SqliteStore {
    SqliteStore::open_with(temp_path("store"), options).unwrap()
}

pub async fn drop_store(store: SqliteStore) {
    remove_database(store.path());
}
