//! The conformance kit against PostgreSQL, each check in a schema of its own.

mod support;

use support::{drop_store, fresh_store};

decider_tests::conformance_tests!(fresh_store, drop_store);
