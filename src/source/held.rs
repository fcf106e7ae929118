//! Which numbered input a stage's held pieces came from, so a source whose input can be
//! read again (the disk buffer's log, a file) knows the oldest it must keep.
//!
//! A stage holds the first pieces of a split line or a growing stack trace across reads,
//! and says only when the oldest of them began ([`Stage::held_since`]). So each input taken
//! while the stage held something is noted with when it was taken; the oldest held piece
//! came from the latest input taken before it began, or a later one.

use std::collections::VecDeque;
use std::time::Instant;

use crate::pipeline::Stage;

/// The inputs (by number) one stage may hold pieces of.
#[derive(Debug, Default)]
pub struct Held {
    /// Inputs taken while the stage held something, with when, oldest first: the first
    /// one's time is at or before the oldest held piece's start.
    begun: VecDeque<(Instant, u64)>,
}

impl Held {
    /// The oldest input whose pieces the stage may still hold.
    pub fn pin(&self) -> Option<u64> {
        self.begun.front().map(|(_, seq)| *seq)
    }

    /// After `stage` took input `seq` at the time given (or `None` after a release): drops
    /// what it no longer holds pieces of.
    pub fn note(&mut self, stage: &Stage, input: Option<(Instant, u64)>) {
        let Some(since) = stage.held_since() else {
            self.begun.clear();
            return;
        };
        self.begun.extend(input);
        // Keep the latest input taken strictly before the oldest held piece began: that
        // piece began while it, or one after it, was read.
        while self.begun.len() >= 2 && self.begun[1].0 < since {
            self.begun.pop_front();
        }
    }
}
