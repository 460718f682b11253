-- The image-ring test's per-image measures (pipeline/images/measures.py): a second hash family and a
-- detail score. Null for images stored before this migration: such images never confirm a
-- near-duplicate pair by dHash (an embedding cosine still can).
alter table images
    add column if not exists dhash text,                -- 16 hex digits, imagehash.dhash
    add column if not exists detail double precision;   -- share of texture pixels in [0, 1]
