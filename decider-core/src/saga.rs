//! Sagas: pure reactions from events to commands.
//!
//! A saga (or process manager) says which commands an event should cause. It decides nothing
//! itself and touches nothing: a saga runner delivers events to it and sends the commands it
//! returns through a [`CommandHandler`](crate::CommandHandler), using the triggering event's id
//! as the idempotency key so a redelivered event never sends a command twice in effect.
//!
//! ```
//! use decider_core::Saga;
//!
//! enum Event { OrderPlaced { order: u32 } }
//! #[derive(Debug, PartialEq)]
//! enum Command { ReserveStock { order: u32 } }
//!
//! struct Fulfilment;
//! impl Saga for Fulfilment {
//!     type Event = Event;
//!     type Command = Command;
//!     fn react(&self, event: &Event) -> Vec<Command> {
//!         match event { Event::OrderPlaced { order } => vec![Command::ReserveStock { order: *order }] }
//!     }
//! }
//! assert_eq!(Fulfilment.react(&Event::OrderPlaced { order: 7 }), vec![Command::ReserveStock { order: 7 }]);
//! ```

/// Reacts to events with commands.
pub trait Saga {
    /// The events it reacts to.
    type Event;
    /// The commands it sends.
    type Command;

    /// The commands `event` causes; empty when the event is of no interest.
    fn react(&self, event: &Self::Event) -> Vec<Self::Command>;
}
