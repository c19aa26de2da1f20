-- This node's range of row ids on a Citus cluster (quota.own_id_range()), once every sequence
-- of the extension exists: on a worker Citus adds after quota.distribute(), Citus creates the
-- extension with the node's group id already set.
SELECT quota.own_id_range();
