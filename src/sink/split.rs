//! A request the backend finds too large (HTTP 413), sent again in halves, and one verdict
//! made of the parts' verdicts.
//!
//! Every exporter answers a 413 with [`Verdict::TooLarge`] and leaves the splitting here, so
//! the halves keep one set of rules: they go one after the other, first half first (a
//! stream's lines stay in order), down to single events; a single event that is still too
//! large is refused (dead-lettered); and a part that fails as a whole (a retryable answer)
//! stops the sending, the parts after it going with its retry, never before it.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use super::retry::Verdict;

/// Sends `0..n` with `send`, splitting on [`Verdict::TooLarge`]; `split` is told each time a
/// part is halved (for a warning). Indices in the verdict are into `0..n`.
pub async fn send<F, Fut>(n: usize, mut send: F, mut split: impl FnMut(usize)) -> Verdict
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Verdict>,
{
    // Parts still to send, the next one on top.
    let mut todo: Vec<Range<usize>> = Vec::with_capacity(8);
    todo.push(0..n);
    let mut done: Vec<(Range<usize>, Verdict)> = Vec::new();
    while let Some(range) = todo.pop() {
        match send(range.clone()).await {
            Verdict::TooLarge { .. } if range.len() > 1 => {
                split(range.len());
                let mid = range.start + range.len() / 2;
                todo.push(mid..range.end);
                todo.push(range.start..mid);
            }
            Verdict::TooLarge { reason } => done.push((
                range,
                Verdict::Rejected {
                    reason: format!("{reason} (a single event larger than the backend accepts)"),
                },
            )),
            v @ Verdict::Retry { .. } => {
                // What follows waits for this part's retry.
                done.extend(todo.drain(..).map(|r| (r, v.clone())));
                done.push((range, v));
            }
            v => done.push((range, v)),
        }
    }
    merge(n, done)
}

/// One verdict for `n` events from the verdicts of the parts that cover them. Events refused
/// without being named (Loki's 400 after storing the rest) cannot be said next to a retry,
/// so in that rare mix they are logged here and left out of the count.
pub fn merge(n: usize, mut done: Vec<(Range<usize>, Verdict)>) -> Verdict {
    if done.len() == 1 && done[0].0 == (0..n) {
        return done.pop().map_or(Verdict::Delivered, |(_, v)| v);
    }
    let mut retry = Vec::new();
    let mut rejected = Vec::new();
    let mut after: Option<Duration> = None;
    let mut retry_reason = None;
    let mut unnamed = 0u64;
    let mut unnamed_reason = String::new();
    for (range, verdict) in done {
        match verdict {
            Verdict::Delivered => {}
            Verdict::Accepted {
                rejected: k,
                reason,
            } => {
                unnamed += k;
                unnamed_reason = reason;
            }
            Verdict::Rejected { reason } | Verdict::TooLarge { reason } => {
                rejected.extend(range.map(|i| (i, reason.clone())));
            }
            Verdict::Retry { reason, after: a } => {
                retry.extend(range);
                after = after.max(a);
                retry_reason.get_or_insert(reason);
            }
            Verdict::Partial {
                retry: r,
                rejected: x,
                after: a,
            } => {
                retry.extend(r.iter().map(|i| range.start + i));
                rejected.extend(x.into_iter().map(|(i, why)| (range.start + i, why)));
                after = after.max(a);
            }
        }
    }
    if retry.is_empty() && rejected.is_empty() {
        return match unnamed {
            0 => Verdict::Delivered,
            k => Verdict::Accepted {
                rejected: k,
                reason: unnamed_reason,
            },
        };
    }
    if unnamed > 0 {
        tracing::error!(
            rejected = unnamed,
            reason = %unnamed_reason,
            "the backend refused events of a split request without naming them, events lost"
        );
    }
    retry.sort_unstable();
    rejected.sort_by_key(|r| r.0);
    if rejected.is_empty() && unnamed == 0 && retry.len() == n {
        return Verdict::Retry {
            reason: retry_reason.unwrap_or("partial"),
            after,
        };
    }
    if retry.is_empty() && unnamed == 0 && rejected.len() == n {
        let first = &rejected[0].1;
        if rejected.iter().all(|r| &r.1 == first) {
            return Verdict::Rejected {
                reason: rejected.swap_remove(0).1,
            };
        }
    }
    Verdict::Partial {
        retry,
        rejected,
        after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn too_large() -> Verdict {
        Verdict::TooLarge {
            reason: "HTTP 413".into(),
        }
    }

    fn retry() -> Verdict {
        Verdict::Retry {
            reason: "server_error",
            after: Some(Duration::from_secs(2)),
        }
    }

    /// Runs [`send`] over `n` events with `answer` deciding each part; returns the verdict
    /// and the parts in the order they were sent.
    fn run(n: usize, answer: impl Fn(&Range<usize>) -> Verdict) -> (Verdict, Vec<Range<usize>>) {
        let sent = RefCell::new(Vec::new());
        let verdict = futures_lite(send(
            n,
            |r| {
                sent.borrow_mut().push(r.clone());
                std::future::ready(answer(&r))
            },
            |_| {},
        ));
        (verdict, sent.into_inner())
    }

    /// Polls a future that never waits.
    fn futures_lite<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            std::task::Poll::Pending => panic!("the parts never wait here"),
        }
    }

    #[test]
    fn halves_go_in_order_down_to_single_events() {
        // Anything over 3 events is too large, and anything holding event 6.
        let (v, sent) = run(10, |r| {
            if r.len() > 3 || r.contains(&6) {
                too_large()
            } else {
                Verdict::Delivered
            }
        });
        let starts: Vec<usize> = sent.iter().map(|r| r.start).collect();
        assert!(starts.is_sorted(), "first halves first: {sent:?}");
        assert_eq!(
            sent,
            [0..10, 0..5, 0..2, 2..5, 5..10, 5..7, 5..6, 6..7, 7..10]
        );
        assert_eq!(
            v,
            Verdict::Partial {
                retry: vec![],
                rejected: vec![(
                    6,
                    "HTTP 413 (a single event larger than the backend accepts)".into()
                )],
                after: None,
            }
        );
    }

    #[test]
    fn a_part_that_fails_whole_holds_back_the_parts_after_it() {
        let (v, sent) = run(8, |r| match r.len() {
            8 => too_large(),
            _ if r.start == 0 => retry(),
            _ => Verdict::Delivered,
        });
        assert_eq!(sent, [0..8, 0..4], "4..8 never went before 0..4");
        assert_eq!(v, retry(), "everything is retried together");
        // The first half stored, the second failing: only it is retried.
        let (v, _) = run(8, |r| match r.len() {
            8 => too_large(),
            _ if r.start == 4 => retry(),
            _ => Verdict::Delivered,
        });
        assert_eq!(
            v,
            Verdict::Partial {
                retry: (4..8).collect(),
                rejected: vec![],
                after: Some(Duration::from_secs(2)),
            }
        );
    }

    #[test]
    fn parts_verdicts_merge_with_their_offsets() {
        let v = merge(
            6,
            vec![
                (0..2, Verdict::Delivered),
                (
                    2..4,
                    Verdict::Partial {
                        retry: vec![1],
                        rejected: vec![(0, "mapping".into())],
                        after: None,
                    },
                ),
                (
                    4..6,
                    Verdict::Rejected {
                        reason: "400".into(),
                    },
                ),
            ],
        );
        assert_eq!(
            v,
            Verdict::Partial {
                retry: vec![3],
                rejected: vec![(2, "mapping".into()), (4, "400".into()), (5, "400".into())],
                after: None,
            }
        );
        let accepted = merge(
            4,
            vec![
                (0..2, Verdict::Delivered),
                (
                    2..4,
                    Verdict::Accepted {
                        rejected: 1,
                        reason: "bad entry".into(),
                    },
                ),
            ],
        );
        assert_eq!(
            accepted,
            Verdict::Accepted {
                rejected: 1,
                reason: "bad entry".into()
            }
        );
        let refused = merge(
            4,
            vec![
                (0..2, Verdict::Rejected { reason: "x".into() }),
                (2..4, Verdict::Rejected { reason: "x".into() }),
            ],
        );
        assert_eq!(refused, Verdict::Rejected { reason: "x".into() });
        assert_eq!(merge(3, vec![(0..3, retry())]), retry());
    }
}
