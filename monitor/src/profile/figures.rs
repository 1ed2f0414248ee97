//! A job's counters in its profile: each row of [`crate::job_counters`] as
//! its key (seconds as a float, a split figure as an object its rows
//! share), in the rows' order. A key a profile lacks (one an older daemon
//! did not write) reads as 0; keys no row knows are ignored.
use std::{collections::BTreeSet, fmt};

use monitor_common::CgroupCounters;
use serde::{
    Deserializer, Serialize, Serializer,
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor},
    ser::SerializeMap,
};

use crate::{
    job_counters::{Figure, JobCounter, Part},
    system::time::seconds,
};

/// Seconds back to nanoseconds, as they were before they were shown.
fn nanos(seconds: f64) -> u64 {
    (seconds * 1e9).round() as u64
}

/// The parts of every split row whose key is `key`.
fn parts_of(key: &str) -> impl Iterator<Item = &'static Part> + '_ {
    JobCounter::all()
        .filter(move |row| row.key == key)
        .flat_map(|row| match &row.figure {
            Figure::Split { parts, .. } => parts.as_slice(),
            _ => &[],
        })
}

/// `counters` as a profile reads back: what it shows of them, and no more
/// (an RSS below zero shows as 0, a peak never below the RSS).
pub fn as_shown(counters: &CgroupCounters) -> CgroupCounters {
    let mut shown = CgroupCounters::default();
    for row in JobCounter::all() {
        match &row.figure {
            Figure::Count(field) | Figure::Seconds(field) => {
                (field.set)(&mut shown, (field.get)(counters))
            }
            Figure::Split { parts, .. } => {
                for part in parts {
                    (part.field.set)(&mut shown, (part.field.get)(counters));
                }
            }
        }
    }
    shown
}

/// The object of a split key: every part of the rows sharing it.
struct Parts<'a> {
    key: &'static str,
    counters: &'a CgroupCounters,
}

impl Serialize for Parts<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for part in parts_of(self.key) {
            map.serialize_entry(part.key, &(part.field.get)(self.counters))?;
        }
        map.end()
    }
}

/// The counters' keys, to be flattened into the profile.
pub fn serialize<S: Serializer>(
    counters: &CgroupCounters,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut map = serializer.serialize_map(None)?;
    let mut written = BTreeSet::new();
    for row in JobCounter::all() {
        match &row.figure {
            Figure::Count(field) => map.serialize_entry(row.key, &(field.get)(counters))?,
            Figure::Seconds(field) => {
                map.serialize_entry(row.key, &seconds((field.get)(counters)))?
            }
            Figure::Split { .. } => {
                // At the first row of the key, with the parts of them all.
                if written.insert(row.key) {
                    let parts = Parts {
                        key: row.key,
                        counters,
                    };
                    map.serialize_entry(row.key, &parts)?;
                }
            }
        }
    }
    map.end()
}

/// The counters from a profile's keys (the rest of them left for others).
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<CgroupCounters, D::Error> {
    deserializer.deserialize_map(CountersVisitor)
}

struct CountersVisitor;

impl<'de> Visitor<'de> for CountersVisitor {
    type Value = CgroupCounters;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a job profile's counters")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CgroupCounters, A::Error> {
        let mut counters = CgroupCounters::default();
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let Some(row) = JobCounter::all().find(|row| row.key == key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if !seen.insert(row.key) {
                return Err(de::Error::duplicate_field(row.key));
            }
            match &row.figure {
                Figure::Count(field) => (field.set)(&mut counters, map.next_value()?),
                Figure::Seconds(field) => (field.set)(&mut counters, nanos(map.next_value()?)),
                Figure::Split { .. } => map.next_value_seed(PartsSeed {
                    key: row.key,
                    counters: &mut counters,
                })?,
            }
        }
        Ok(counters)
    }
}

/// Reads a split key's object into the counters.
struct PartsSeed<'a> {
    key: &'static str,
    counters: &'a mut CgroupCounters,
}

impl<'de> DeserializeSeed<'de> for PartsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PartsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "the object {:?} of a job profile", self.key)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let Some(part) = parts_of(self.key).find(|part| part.key == key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            if !seen.insert(part.key) {
                return Err(de::Error::duplicate_field(part.key));
            }
            (part.field.set)(self.counters, map.next_value()?);
        }
        Ok(())
    }
}
