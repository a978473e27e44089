//! What a batch scheduler tells a process about its share of the work and of the
//! machine: the shard of an array job (SLURM arrays, Kubernetes indexed jobs) and the
//! CPUs it may use. Each value comes with where it came from, which run.json records.
//!
//! The functions take the environment as a lookup so they are tested without touching
//! the process's own.

/// A setting and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected<T> {
    pub value: T,
    pub source: String,
}

fn number(env: &dyn Fn(&str) -> Option<String>, key: &str) -> Result<Option<usize>, String> {
    match env(key) {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| format!("{key}={v} is not a whole number")),
    }
}

/// Parses a shard as `INDEX/COUNT` (`--shard`, run.json `shard`), the index below
/// the count.
pub fn parse_shard(s: &str) -> Result<(usize, usize), String> {
    let (i, n) = s
        .split_once('/')
        .ok_or_else(|| format!("'{s}': expected INDEX/COUNT, e.g. 0/4"))?;
    let (i, n): (usize, usize) = (
        i.trim()
            .parse()
            .map_err(|_| format!("'{i}' is not a shard index"))?,
        n.trim()
            .parse()
            .map_err(|_| format!("'{n}' is not a shard count"))?,
    );
    if n == 0 || i >= n {
        return Err(format!(
            "shard {i}/{n}: the index must be below the count (0/{n} .. {}/{n})",
            n.max(1) - 1
        ));
    }
    Ok((i, n))
}

/// The shard of an array task: `SLURM_ARRAY_TASK_ID` of `SLURM_ARRAY_TASK_COUNT` (or of
/// `SLURM_ARRAY_TASK_MIN..=MAX` where the count is absent, index taken from the
/// minimum), or a Kubernetes indexed job's `JOB_COMPLETION_INDEX` of `count` (which the
/// job must give: Kubernetes does not export it). None outside an array job.
pub fn shard_from_env(
    env: &dyn Fn(&str) -> Option<String>,
    count: Option<usize>,
) -> Result<Option<Detected<(usize, usize)>>, String> {
    let check = |index: usize, n: usize, source: String| {
        if n == 0 || index >= n {
            Err(format!("{source}: the index must be below the count"))
        } else {
            Ok(Some(Detected {
                value: (index, n),
                source,
            }))
        }
    };
    if let Some(id) = number(env, "SLURM_ARRAY_TASK_ID")? {
        if let Some(n) = count {
            return check(
                id,
                n,
                format!("SLURM_ARRAY_TASK_ID={id}, --shard-count {n}"),
            );
        }
        if let Some(n) = number(env, "SLURM_ARRAY_TASK_COUNT")? {
            let min = number(env, "SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
            return check(id.checked_sub(min).ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?, n, format!("SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}, SLURM_ARRAY_TASK_COUNT={n}"));
        }
        if let (Some(min), Some(max)) = (
            number(env, "SLURM_ARRAY_TASK_MIN")?,
            number(env, "SLURM_ARRAY_TASK_MAX")?,
        ) {
            let index = id
                .checked_sub(min)
                .ok_or("SLURM_ARRAY_TASK_ID is below SLURM_ARRAY_TASK_MIN")?;
            return check(index, max.saturating_sub(min) + 1, format!("SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}, SLURM_ARRAY_TASK_MAX={max}"));
        }
        return Err(format!("SLURM_ARRAY_TASK_ID={id} is set but neither SLURM_ARRAY_TASK_COUNT nor MIN/MAX; give --shard INDEX/COUNT"));
    }
    if let Some(index) = number(env, "JOB_COMPLETION_INDEX")? {
        let n = count.ok_or(format!("JOB_COMPLETION_INDEX={index} is set: give the number of indexed jobs with --shard-count N"))?;
        return check(
            index,
            n,
            format!("JOB_COMPLETION_INDEX={index}, --shard-count {n}"),
        );
    }
    Ok(None)
}

/// Compute threads when none are asked for: the CPUs this process may use (the affinity
/// mask and the cgroup v1/v2 CPU quota, as `available` reports them), never more than
/// `SLURM_CPUS_PER_TASK`.
pub fn threads_from_env(env: &dyn Fn(&str) -> Option<String>, available: usize) -> Detected<usize> {
    let base = Detected {
        value: available.max(1),
        source: "the CPUs this process may use (affinity mask, cgroup quota)".to_string(),
    };
    match number(env, "SLURM_CPUS_PER_TASK") {
        Ok(Some(n)) if n >= 1 && n < base.value => Detected {
            value: n,
            source: format!("SLURM_CPUS_PER_TASK={n}"),
        },
        _ => base,
    }
}

/// The process's environment, as the functions above read it.
pub fn process_env(key: &str) -> Option<String> {
    std::env::var(key).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_shard_is_an_index_below_its_count() {
        assert_eq!(parse_shard("1/4"), Ok((1, 4)));
        assert_eq!(parse_shard(" 0 / 2 "), Ok((0, 2)));
        assert!(parse_shard("4/4").unwrap_err().contains("below the count"));
        assert!(parse_shard("0/0").is_err());
        assert!(parse_shard("1").unwrap_err().contains("INDEX/COUNT"));
        assert!(parse_shard("a/2")
            .unwrap_err()
            .contains("not a shard index"));
    }

    #[test]
    fn slurm_arrays_and_indexed_jobs_give_the_shard() {
        let shard = |pairs: &[(&str, &str)], count| {
            shard_from_env(&env(pairs), count).map(|d| d.map(|d| d.value))
        };
        assert_eq!(shard(&[], None), Ok(None));
        assert_eq!(
            shard(
                &[
                    ("SLURM_ARRAY_TASK_ID", "2"),
                    ("SLURM_ARRAY_TASK_COUNT", "4")
                ],
                None
            ),
            Ok(Some((2, 4)))
        );
        assert_eq!(
            shard(
                &[
                    ("SLURM_ARRAY_TASK_ID", "11"),
                    ("SLURM_ARRAY_TASK_MIN", "10"),
                    ("SLURM_ARRAY_TASK_MAX", "13")
                ],
                None
            ),
            Ok(Some((1, 4)))
        );
        assert_eq!(
            shard(
                &[
                    ("SLURM_ARRAY_TASK_ID", "3"),
                    ("SLURM_ARRAY_TASK_COUNT", "8")
                ],
                Some(4)
            ),
            Ok(Some((3, 4))),
            "the flag wins"
        );
        assert_eq!(
            shard(&[("JOB_COMPLETION_INDEX", "5")], Some(6)),
            Ok(Some((5, 6)))
        );
        assert!(shard(&[("JOB_COMPLETION_INDEX", "5")], None)
            .unwrap_err()
            .contains("--shard-count"));
        assert!(shard(
            &[
                ("SLURM_ARRAY_TASK_ID", "4"),
                ("SLURM_ARRAY_TASK_COUNT", "4")
            ],
            None
        )
        .is_err());
        assert!(shard(&[("SLURM_ARRAY_TASK_ID", "x")], None)
            .unwrap_err()
            .contains("SLURM_ARRAY_TASK_ID=x"));
    }

    #[test]
    fn threads_never_exceed_what_the_scheduler_gave() {
        assert_eq!(threads_from_env(&env(&[]), 16).value, 16);
        let t = threads_from_env(&env(&[("SLURM_CPUS_PER_TASK", "4")]), 16);
        assert_eq!((t.value, t.source.as_str()), (4, "SLURM_CPUS_PER_TASK=4"));
        assert_eq!(
            threads_from_env(&env(&[("SLURM_CPUS_PER_TASK", "32")]), 16).value,
            16
        );
        assert_eq!(threads_from_env(&env(&[]), 0).value, 1);
    }
}
