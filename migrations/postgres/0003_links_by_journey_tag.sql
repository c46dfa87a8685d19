-- An account loop's links are read through the journey loops of its tag (a partial index that holds
-- only journey loops, which are few) and the primary key of `loop_links` (journey loop, account loop).
-- Every link connects loops of one tag. The index of links by account loop goes: account loop ids are
-- digests, so it took one scattered B-tree insert per link, about 40% of what writing a link cost.
CREATE INDEX loops_journey_tag ON loops (tag) WHERE kind = 'journey';
DROP INDEX loop_links_account;
