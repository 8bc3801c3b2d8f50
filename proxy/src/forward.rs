//! Forward actions, shared by HTTP rules and TCP listeners: the weighted target groups an
//! action sends to, and the weighted pick among them (per request on HTTP, per flow on TCP).

use berth_config::model::{Action, WeightedGroup};

/// The weighted target groups of a forward action.
pub fn forward_groups(action: &Action) -> Option<&[WeightedGroup]> {
    match action {
        Action::Forward(f) => Some(&f.groups),
        _ => None,
    }
}

/// Picks one of a forward action's target groups at random by weight (L7 per request, L4 per
/// flow). Validation guarantees at least one group and a positive weight sum; an empty list
/// yields an empty name, which no group has.
pub fn pick_group(groups: &[WeightedGroup]) -> &str {
    let total: u32 = groups.iter().map(|g| g.weight).sum();
    let mut pos = if total > 1 {
        fastrand::u32(0..total)
    } else {
        0
    };
    for g in groups {
        if pos < g.weight {
            return &g.target_group;
        }
        pos -= g.weight;
    }
    groups.first().map_or("", |g| g.target_group.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::model::Forward;

    fn wg(name: &str, weight: u32) -> WeightedGroup {
        WeightedGroup {
            target_group: name.into(),
            weight,
        }
    }

    #[test]
    fn picks_follow_the_weights() {
        let groups = [wg("blue", 90), wg("green", 10), wg("off", 0)];
        let mut green = 0;
        for _ in 0..10_000 {
            match pick_group(&groups) {
                "green" => green += 1,
                "blue" => {}
                other => panic!("picked {other:?}"),
            }
        }
        assert!(
            (700..1300).contains(&green),
            "green {green} of 10000 at weight 10 %"
        );
        assert_eq!(pick_group(&[wg("only", 1)]), "only");
        assert_eq!(pick_group(&[]), "");
    }

    #[test]
    fn only_forward_actions_have_groups() {
        let forward = Action::Forward(Forward {
            groups: vec![wg("g", 1)],
            stickiness: None,
        });
        assert_eq!(forward_groups(&forward).map(<[_]>::len), Some(1));
    }
}
