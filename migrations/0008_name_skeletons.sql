-- Look-alike names: Latin "mossa" and Cyrillic "mоssа" must not both exist in one guild. Each
-- name carries its confusable skeleton (castbot_skeleton(), bot.prompts.name_skeleton, registered
-- on every connection), and a guild's live characters and its imports hold each skeleton once.

ALTER TABLE characters ADD COLUMN name_skeleton TEXT;
ALTER TABLE character_imports ADD COLUMN alias_skeleton TEXT;

UPDATE characters SET name_skeleton = castbot_skeleton(name);
UPDATE character_imports SET alias_skeleton = castbot_skeleton(alias);

-- Look-alikes made before this migration keep working under their exact names: the oldest
-- keeps the skeleton, the later ones get a private one (suffixed with their id) that no typed
-- name can match.
UPDATE characters SET name_skeleton = name_skeleton || '#c' || id
WHERE deleted_at IS NULL AND EXISTS (
    SELECT 1 FROM characters o
    WHERE o.guild_id = characters.guild_id AND o.deleted_at IS NULL
      AND o.name_skeleton = characters.name_skeleton AND o.id < characters.id
);
UPDATE character_imports SET alias_skeleton = alias_skeleton || '#i' || id
WHERE EXISTS (
    SELECT 1 FROM characters c
    WHERE c.guild_id = character_imports.guild_id AND c.deleted_at IS NULL
      AND c.name_skeleton = character_imports.alias_skeleton
) OR EXISTS (
    SELECT 1 FROM character_imports o
    WHERE o.guild_id = character_imports.guild_id
      AND o.alias_skeleton = character_imports.alias_skeleton AND o.id < character_imports.id
);

CREATE UNIQUE INDEX characters_live_skeleton ON characters (guild_id, name_skeleton) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX character_imports_skeleton ON character_imports (guild_id, alias_skeleton);

-- One namespace across both tables: a character may not take an import's skeleton, nor the reverse.
CREATE TRIGGER characters_skeleton_free_of_imports BEFORE INSERT ON characters
WHEN NEW.deleted_at IS NULL AND EXISTS (
    SELECT 1 FROM character_imports i WHERE i.guild_id = NEW.guild_id AND i.alias_skeleton = NEW.name_skeleton
)
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: an import of this guild looks like this name');
END;

CREATE TRIGGER imports_skeleton_free_of_characters BEFORE INSERT ON character_imports
WHEN EXISTS (
    SELECT 1 FROM characters c
    WHERE c.guild_id = NEW.guild_id AND c.deleted_at IS NULL AND c.name_skeleton = NEW.alias_skeleton
)
BEGIN
    SELECT RAISE(ABORT, 'UNIQUE constraint failed: a character of this guild looks like this name');
END;
