//! The soak's partition: for a while every packet on the underlay between the two hosts is
//! dropped (an nftables table in h1's namespace dropping the underlay veth's traffic in,
//! out and through, silently, as a cut cable far away or a firewall would; no error reaches
//! either side). While it lasts, h1's `/health_summary` must show h2 down within
//! [`SEEN_DOWN_LIMIT`] and never hang, h2's must show h1 down by the end, and no agent on
//! either host may restart. Once the table is gone, the whole system must be `ok` again
//! (the bridge's tunnel re-established, h2's agents back in h1's summary) within the
//! recovery limit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    daemon_addr, get, in_netns, progress, summary_ok, Expect, Judged, Kind, Soak, RECOVERY_LIMIT,
    RECOVERY_TICK, SUMMARY_TIMEOUT, TICK,
};
use crate::bridge_lab::output;

/// How soon a host must show its unreachable peer as down.
pub const SEEN_DOWN_LIMIT: Duration = Duration::from_secs(10);
/// The nftables table of the cut.
const TABLE: &str = "abench_soak_cut";

/// How long the underlay is cut in a soak of `minutes`: a sixth of it, at least 15 s, at
/// most 5 minutes (the "a peer host unreachable for 5 minutes and back").
pub fn length(minutes: u64) -> Duration {
    Duration::from_secs((minutes * 60 / 6).clamp(15, 300))
}

/// The rules that drop everything on `dev` (input, output, forward).
fn rules(dev: &str) -> String {
    let mut s = format!("table inet {TABLE} {{\n");
    for (chain, hook, key) in [
        ("cut_in", "input", "iifname"),
        ("cut_out", "output", "oifname"),
        ("cut_fwd_in", "forward", "iifname"),
        ("cut_fwd_out", "forward", "oifname"),
    ] {
        s.push_str(&format!(
            "  chain {chain} {{ type filter hook {hook} priority -300; policy accept; \
             {key} \"{dev}\" drop; }}\n"
        ));
    }
    s.push_str("}\n");
    s
}

/// Whether host `name` is shown down (not up) in a summary.
fn shown_down(v: &Value, name: &str) -> bool {
    v["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|h| h["host"] == name)
        .is_some_and(|h| h["up"] == false)
}

impl<'a> Soak<'a> {
    /// Cuts the underlay for [`Soak::cut_for`], checks what must hold during the cut and
    /// after it, and records the outcome.
    pub(super) fn partition(&mut self, before: HashMap<String, i32>) -> Result<(), String> {
        let dev = self.lab.underlay[0].clone();
        let mut c = self.lab.in_host(0, &self.nft);
        c.args(["-f", "-"]);
        if let Err(e) = output(c, Some(rules(&dev).as_bytes())) {
            self.r
                .outcome(Kind::Partition)
                .skipped
                .push(format!("cannot cut the underlay: {e}"));
            return Ok(());
        }
        let target = format!(
            "h1 <-> h2 underlay ({dev}) cut for {} s",
            self.cut_for.as_secs()
        );
        progress(&format!("{}: {target}", Kind::Partition.label()));
        let expect = Expect {
            kind: Kind::Partition,
            target: target.clone(),
            restart: Vec::new(),
            before,
            replaced: None,
        };
        let mut failures = Vec::new();
        let (seen_down, h2_saw) = self.while_cut(&expect, &mut failures);
        // (Were the soak to end before this, the namespaces' removal takes the cut along.)
        let mut c = self.lab.in_host(0, &self.nft);
        c.args(["delete", "table", "inet", TABLE]);
        output(c, None).map_err(|e| format!("cannot remove the underlay cut: {e}"))?;
        let back = Instant::now();
        let recovered = loop {
            self.tick(None, RECOVERY_TICK);
            let judged = expect.judge(&self.last).and_then(|()| match &self.summary {
                Ok(v) => summary_ok(v, self.names.len()).map_err(Judged::Waiting),
                Err(e) => Err(Judged::Waiting(format!("h1's summary: {e}"))),
            });
            match judged {
                Ok(()) => break Some(back.elapsed()),
                Err(Judged::Wrong(w)) => {
                    failures.push(format!("after the cut: {w}"));
                    break None;
                }
                Err(Judged::Waiting(w)) if back.elapsed() > RECOVERY_LIMIT => {
                    failures.push(format!(
                        "not ok {RECOVERY_LIMIT:?} after the underlay came back: {w}"
                    ));
                    break None;
                }
                Err(Judged::Waiting(_)) => {}
            }
        };
        let show =
            |d: Option<Duration>| d.map_or("never".into(), |d| format!("{:.1} s", d.as_secs_f64()));
        self.r.partitions.push(format!(
            "{target}: h1 showed h2 down after {} (limit {} s); h2 showed h1 down: {}; \
             `ok` again {} after the underlay came back",
            show(seen_down),
            SEEN_DOWN_LIMIT.as_secs(),
            if h2_saw { "yes" } else { "no" },
            show(recovered),
        ));
        let o = self.r.outcome(Kind::Partition);
        o.injected += 1;
        if let Some(d) = recovered {
            o.recovered.push(d);
        }
        o.failures.extend(failures);
        Ok(())
    }

    /// Ticks through the cut: no agent may change pid, h1 must show h2 down within
    /// [`SEEN_DOWN_LIMIT`]. Returns when h1 first showed h2 down, and whether h2 showed h1
    /// down at the end.
    fn while_cut(
        &mut self,
        expect: &Expect,
        failures: &mut Vec<String>,
    ) -> (Option<Duration>, bool) {
        let t = Instant::now();
        let mut seen_down = None;
        let mut wrong = None;
        while t.elapsed() < self.cut_for {
            self.tick(None, TICK);
            if let Err(Judged::Wrong(w)) = expect.judge(&self.last) {
                wrong.get_or_insert(w);
            }
            if seen_down.is_none() && self.summary.as_ref().is_ok_and(|v| shown_down(v, "h2")) {
                seen_down = Some(t.elapsed());
            }
        }
        if let Some(w) = wrong {
            failures.push(format!("during the cut: {w}"));
        }
        match seen_down {
            Some(d) if d <= SEEN_DOWN_LIMIT => {}
            Some(d) => failures.push(format!(
                "h1 showed h2 down only after {:.1} s (limit {} s)",
                d.as_secs_f64(),
                SEEN_DOWN_LIMIT.as_secs()
            )),
            None => failures.push("h1 never showed h2 down during the cut".into()),
        }
        let ns = self.lab.hosts[1].netns.clone();
        let h2 = in_netns(&ns, || {
            get(daemon_addr(), "/health_summary", SUMMARY_TIMEOUT)
        })
        .and_then(|a| serde_json::from_slice::<Value>(&a.body).map_err(|e| e.to_string()));
        let h2_saw = match h2 {
            Ok(v) => shown_down(&v, "h1"),
            Err(e) => {
                failures.push(format!("h2's summary during the cut: {e}"));
                false
            }
        };
        if !h2_saw {
            failures.push("h2 did not show h1 down at the end of the cut".into());
        }
        (seen_down, h2_saw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cut_is_a_sixth_of_the_run_within_15_s_and_5_min() {
        assert_eq!(length(1), Duration::from_secs(15));
        assert_eq!(length(2), Duration::from_secs(20));
        assert_eq!(length(30), Duration::from_secs(300));
        assert_eq!(length(600), Duration::from_secs(300));
    }

    #[test]
    fn the_cut_drops_the_device_every_way() {
        let r = rules("ob1u1");
        assert!(r.starts_with("table inet abench_soak_cut {"), "{r}");
        assert_eq!(r.matches("\"ob1u1\" drop").count(), 4, "{r}");
        for hook in ["input", "output", "forward"] {
            assert!(r.contains(&format!("hook {hook} priority -300")), "{r}");
        }
    }

    #[test]
    fn a_host_is_down_only_when_the_summary_says_so() {
        let v =
            serde_json::json!({"hosts": [{"host": "h1", "up": true}, {"host": "h2", "up": false}]});
        assert!(shown_down(&v, "h2"));
        assert!(!shown_down(&v, "h1"));
        assert!(!shown_down(&v, "h3"));
    }
}
