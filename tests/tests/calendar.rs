//! The system's market calendar against the simulator's, written apart
//! from it: every day of 2000–2030 must agree, or one of them is wrong.

use chrono::{Datelike, NaiveDate};

#[test]
fn the_system_and_the_simulator_agree_on_every_trading_day_2000_to_2030() {
    let mut day = NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default();
    let end = NaiveDate::from_ymd_opt(2030, 12, 31).unwrap_or_default();
    let (mut disagreements, mut trading_days) = (Vec::new(), 0);
    while day <= end {
        let system = signal9_shared::calendar::is_trading_day(day);
        let simulator = alpaca_sim::calendar::is_trading_day(day);
        if system != simulator {
            disagreements.push(format!(
                "{day} ({:?}): system {system}, simulator {simulator}",
                day.weekday()
            ));
        }
        trading_days += usize::from(simulator);
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    // About 252 trading days a year over 31 years.
    assert!((7_700..7_900).contains(&trading_days), "{trading_days}");
}
