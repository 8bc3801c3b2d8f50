//! A policy's vote at one tick: the desired count it wants and whether it objects to a
//! scale-in. The policy module's `decide` combines the votes.

/// One policy's opinion for this tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vote {
    /// The configured name of the policy that votes (logged, and the `policy` label of
    /// `berth_scaler_decisions_total` when it wins).
    pub policy: String,
    /// The desired count it wants; `None`: no opinion.
    pub desired: Option<u32>,
    /// Whether it objects to a scale-in (a scale-in needs every policy's consent).
    pub blocks_scale_in: bool,
    /// Why, in words, with the figures it saw: logged with the decision.
    pub reason: String,
}

impl Vote {
    /// A vote for `desired`.
    pub fn wants(policy: &str, desired: u32, blocks_scale_in: bool, reason: String) -> Vote {
        Vote {
            policy: policy.to_owned(),
            desired: Some(desired),
            blocks_scale_in,
            reason,
        }
    }

    /// A vote to keep `current`, objecting to scale-in.
    pub fn hold(policy: &str, current: u32, why: &str) -> Vote {
        Vote::wants(policy, current, true, why.to_owned())
    }
}
