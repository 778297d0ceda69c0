//! Reading Prometheus's text exposition in tests: each sample's metric name and label names, as
//! a scraper sees them (a label named twice in one series stays twice, so tests can refuse it),
//! and a metric's value summed over its series.

/// Each sample line of `text`: its metric name and its label names, in order.
pub fn series(text: &str) -> Vec<(String, Vec<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).unwrap_or(l.len());
            let labels = l[name_end..]
                .strip_prefix('{')
                .and_then(|rest| rest.rsplit_once('}'))
                .map(|(inner, _)| {
                    inner
                        .split("\",")
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, _)| k.trim_start_matches(',').trim().to_string())
                        .collect()
                })
                .unwrap_or_default();
            (l[..name_end].to_string(), labels)
        })
        .collect()
}

/// The sum of every sample of metric `name` (all its label sets); 0 when it has none.
pub fn sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_metric_sums_over_its_series_only() {
        let text = "# TYPE x counter\nx{a=\"1\"} 3\nx{a=\"2\"} 4.5\nx_total 100\ny 1\n";
        assert_eq!(super::sum(text, "x"), 7.5);
        assert_eq!(super::sum(text, "x_total"), 100.0);
        assert_eq!(super::sum(text, "absent"), 0.0);
    }

    #[test]
    fn names_and_labels_in_order() {
        let text =
            "# HELP x help\n# TYPE x counter\nx{a=\"1\",b=\"p,q\"} 3\ny 1\nz{s=\"1\",s=\"1\"} 2\n";
        assert_eq!(
            super::series(text),
            [
                ("x".into(), vec!["a".to_string(), "b".to_string()]),
                ("y".into(), vec![]),
                ("z".into(), vec!["s".to_string(), "s".to_string()]),
            ]
        );
    }
}
