-- The file-count quota (every entry of a home counts: files, directories,
-- links, and partial uploads while they last), and a home that could not
-- be measured: while usage_problem says why, the user's writes are refused
-- (a home that cannot be measured counts as over its quota, never as empty).
ALTER TABLE users ADD COLUMN quota_files BIGINT CHECK (quota_files IS NULL OR quota_files >= 0);
ALTER TABLE users ADD COLUMN reserved_files BIGINT NOT NULL DEFAULT 0 CHECK (reserved_files >= 0);
ALTER TABLE users ADD COLUMN usage_problem TEXT;
