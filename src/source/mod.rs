//! Sources: where events enter. Each turns client bytes into [`Batch`](crate::event::Batch)es
//! and hands them to the [`Router`](crate::buffer::Router).

pub mod forward;
