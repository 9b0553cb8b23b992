-- The memory that replaced this one (an extracted fact that updates it), as Mem0 and AgentCore
-- keep history: a superseded memory stays readable by id and ranks below the current one. A
-- plain column like `supersedes`: an id, never content. One spelling for both databases.

ALTER TABLE memories ADD COLUMN superseded_by TEXT;
