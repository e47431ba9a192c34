//! Combinators: compose deciders without runtime cost.
