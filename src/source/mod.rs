//! Sources: where events enter. Each turns client bytes into [`Batch`](crate::event::Batch)es
//! and hands them to the [`Router`](crate::buffer::Router). What they hold before that is
//! bounded by one [`budget::Budget`] for all of them.

pub mod budget;
pub mod forward;
