//! Which node serves a user's rows on its own, on a Citus cluster laid out by
//! `quota.distribute()`: the rule the extension applies to Citus' shard catalog.
//!
//! The per-user tables are split by the hash of `user_id` into ranges, one shard per table and
//! range, all tables' shards of a range together (one colocation group); the catalog tables are
//! reference tables, with a copy on every node. A node serves a range on its own when it holds
//! the shard of that range of every per-user table, and is the only node that does (a shard
//! kept on several nodes must be written through Citus, which writes every copy), and holds a
//! copy of every reference table.

/// One shard of a table of schema quota, as Citus' catalog lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardRow {
    pub table: String,
    /// Distributed by hash (a per-user table); else a reference table.
    pub hashed: bool,
    /// The shard's id.
    pub key: i64,
    /// The hash range of a per-user table's shard, both ends included.
    pub range: Option<(i32, i32)>,
    /// The shard's qualified name.
    pub name: String,
    /// How many nodes hold the shard.
    pub placements: i64,
    /// Whether this node holds it.
    pub here: bool,
    /// The table's identity sequence (an oid), for a table with an identity column `id`.
    pub sequence: Option<u32>,
}

/// One range's shards on this node: the names the statements use in place of the tables.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shard {
    /// The shard id of the range's `user_subscriptions` shard: which statements are theirs.
    pub key: i64,
    /// Each table and the qualified name of its shard here (the range's, or the node's copy of
    /// a reference table).
    pub names: Vec<(String, String)>,
    /// Each per-user table with an identity column, and its sequence: a shard has no identity
    /// (Citus fills the column on the distributed table), so a statement on the shard draws the
    /// id itself.
    pub sequences: Vec<(String, u32)>,
}

impl Shard {
    /// The name of `table`'s shard here, if Citus knows the table.
    pub fn name(&self, table: &str) -> Option<&str> {
        self.names.iter().find(|(t, _)| t == table).map(|(_, name)| name.as_str())
    }

    /// The identity sequence of `table`, if it has one.
    pub fn sequence(&self, table: &str) -> Option<u32> {
        self.sequences.iter().find(|(t, _)| t == table).map(|(_, seq)| *seq)
    }
}

/// What this node serves on its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// Whether the per-user tables are distributed at all.
    pub distributed: bool,
    /// The ranges served here, with their shards.
    pub local: Vec<((i32, i32), Shard)>,
}

impl Layout {
    /// From every shard of the extension's tables.
    pub fn of(rows: &[ShardRow]) -> Layout {
        let hashed: Vec<&ShardRow> = rows.iter().filter(|r| r.hashed).collect();
        let reference: Vec<&ShardRow> = rows.iter().filter(|r| !r.hashed).collect();
        let tables: std::collections::BTreeSet<&str> =
            hashed.iter().map(|r| r.table.as_str()).collect();
        let copies_here = reference.iter().all(|r| r.here);
        let mut local = Vec::new();
        for anchor in hashed.iter().filter(|r| r.table == "user_subscriptions") {
            let Some(range) = anchor.range else { continue };
            let in_range: Vec<&ShardRow> =
                hashed.iter().copied().filter(|r| r.range == Some(range)).collect();
            let in_range_tables: std::collections::BTreeSet<&str> =
                in_range.iter().map(|r| r.table.as_str()).collect();
            let whole = in_range_tables == tables
                && in_range.len() == tables.len()
                && in_range.iter().all(|r| r.here && r.placements == 1);
            if !(whole && copies_here) {
                continue;
            }
            let shard = Shard {
                key: anchor.key,
                names: in_range
                    .iter()
                    .chain(reference.iter())
                    .map(|r| (r.table.clone(), r.name.clone()))
                    .collect(),
                sequences: in_range
                    .iter()
                    .filter_map(|r| r.sequence.map(|s| (r.table.clone(), s)))
                    .collect(),
            };
            local.push((range, shard));
        }
        Layout { distributed: !tables.is_empty(), local }
    }

    /// The shards here of the range holding `hash` (the user id's hash), if served here.
    pub fn find(&self, hash: i32) -> Option<&Shard> {
        self.local.iter().find(|((min, max), _)| *min <= hash && hash <= *max).map(|(_, s)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PER_USER: [&str; 3] = ["user_subscriptions", "user_usage", "usage_records"];

    /// A cluster of `ranges` equal hash ranges over `nodes` nodes, range i on node i % nodes,
    /// seen from node `here`, with the catalog table `features` copied everywhere.
    fn cluster(ranges: i64, nodes: i64, here: i64) -> Vec<ShardRow> {
        let width = (1i64 << 32) / ranges;
        let mut rows = Vec::new();
        for (t, table) in PER_USER.iter().enumerate() {
            for i in 0..ranges {
                let min = i32::MIN as i64 + i * width;
                let max = if i == ranges - 1 { i32::MAX as i64 } else { min + width - 1 };
                let key = 1000 + t as i64 * ranges + i;
                rows.push(ShardRow {
                    table: (*table).into(),
                    hashed: true,
                    key,
                    range: Some((min as i32, max as i32)),
                    name: format!("quota.{table}_{key}"),
                    placements: 1,
                    here: i % nodes == here,
                    sequence: (*table == "usage_records").then_some(77),
                });
            }
        }
        rows.push(ShardRow {
            table: "features".into(),
            hashed: false,
            key: 999,
            range: None,
            name: "quota.features_999".into(),
            placements: nodes,
            here: true,
            sequence: None,
        });
        rows
    }

    #[test]
    fn a_worker_serves_its_ranges_with_every_table() {
        let layout = Layout::of(&cluster(4, 2, 0));
        assert!(layout.distributed);
        assert_eq!(layout.local.len(), 2);
        let shard = layout.find(i32::MIN).expect("range 0 is here");
        assert_eq!(shard.key, 1000);
        assert_eq!(shard.name("user_usage"), Some("quota.user_usage_1004"));
        assert_eq!(shard.name("features"), Some("quota.features_999"));
        assert_eq!(shard.name("settings"), None);
        assert_eq!(shard.sequence("usage_records"), Some(77));
        assert_eq!(shard.sequence("user_usage"), None);
        assert!(layout.find(i32::MIN / 2 + 1).is_none(), "range 1 is on the other node");
    }

    #[test]
    fn without_distributed_tables_nothing_is_served_here() {
        assert_eq!(Layout::of(&[]), Layout::default());
        let only_reference: Vec<ShardRow> =
            cluster(2, 1, 0).into_iter().filter(|r| !r.hashed).collect();
        assert!(!Layout::of(&only_reference).distributed);
    }

    #[test]
    fn a_range_short_of_a_table_or_kept_twice_is_not_served() {
        let mut rows = cluster(2, 1, 0);
        rows.retain(|r| !(r.table == "user_usage" && r.key == 1002));
        let layout = Layout::of(&rows);
        assert_eq!(layout.local.len(), 1, "range 0 lacks its user_usage shard");
        let mut rows = cluster(2, 1, 0);
        for r in rows.iter_mut().filter(|r| r.key == 1005) {
            r.placements = 2;
        }
        assert_eq!(Layout::of(&rows).local.len(), 1, "range 1 has a shard kept twice");
    }

    #[test]
    fn a_missing_copy_of_the_catalog_serves_nothing() {
        let mut rows = cluster(2, 1, 0);
        for r in rows.iter_mut().filter(|r| !r.hashed) {
            r.here = false;
        }
        let layout = Layout::of(&rows);
        assert!(layout.distributed);
        assert!(layout.local.is_empty());
    }

    proptest! {
        /// Every hash finds exactly the range that holds it, when that range is here.
        #[test]
        fn a_hash_finds_the_range_holding_it(
            ranges in 1i64..40, nodes in 1i64..5, here in 0i64..5, hash in any::<i32>()
        ) {
            let rows = cluster(ranges, nodes, here);
            let layout = Layout::of(&rows);
            let holder = rows
                .iter()
                .find(|r| r.table == "user_subscriptions"
                    && r.range.is_some_and(|(min, max)| min <= hash && hash <= max))
                .expect("the ranges cover every hash");
            match layout.find(hash) {
                Some(shard) => {
                    prop_assert!(holder.here);
                    prop_assert_eq!(shard.key, holder.key);
                }
                None => prop_assert!(!holder.here),
            }
        }
    }
}
