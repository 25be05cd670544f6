-- Characters: "recently used" ranking for autocomplete, and finding the imports of a character.

-- NULL until a generation first uses the character; record_use() sets it.
ALTER TABLE characters ADD COLUMN last_used_at REAL;

-- "Every guild that imported this character" (revocation, delete, the owner's view of uses).
CREATE INDEX character_imports_character ON character_imports (character_id);
