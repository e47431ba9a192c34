//! The conformance kit against SQLite, each check on a file of its own; no check ignored.

mod support;

use support::{drop_store, fresh_store};

decider_tests::conformance_tests!(fresh_store, drop_store);
