//! The given/when/then DSL.
