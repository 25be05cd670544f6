-- ../0008_name_skeletons.sql on PostgreSQL. A PostgreSQL database starts empty (it was never an
-- older Castbot's), so there is nothing to backfill with castbot_skeleton(): the store writes
-- each name's skeleton (bot.prompts.name_skeleton) on insert, as it does on SQLite.

ALTER TABLE characters ADD COLUMN name_skeleton TEXT COLLATE "C";
ALTER TABLE character_imports ADD COLUMN alias_skeleton TEXT COLLATE "C";

CREATE UNIQUE INDEX characters_live_skeleton ON characters (guild_id, name_skeleton) WHERE deleted_at IS NULL;
CREATE UNIQUE INDEX character_imports_skeleton ON character_imports (guild_id, alias_skeleton);

-- One namespace across both tables: a character may not take an import's skeleton, nor the reverse.
CREATE FUNCTION characters_skeleton_free_of_imports() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NULL AND EXISTS (
        SELECT 1 FROM character_imports i WHERE i.guild_id = NEW.guild_id AND i.alias_skeleton = NEW.name_skeleton
    ) THEN
        RAISE EXCEPTION 'UNIQUE constraint failed: an import of this guild looks like this name'
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER characters_skeleton_free_of_imports BEFORE INSERT ON characters
    FOR EACH ROW EXECUTE FUNCTION characters_skeleton_free_of_imports();

CREATE FUNCTION imports_skeleton_free_of_characters() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM characters c
        WHERE c.guild_id = NEW.guild_id AND c.deleted_at IS NULL AND c.name_skeleton = NEW.alias_skeleton
    ) THEN
        RAISE EXCEPTION 'UNIQUE constraint failed: a character of this guild looks like this name'
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER imports_skeleton_free_of_characters BEFORE INSERT ON character_imports
    FOR EACH ROW EXECUTE FUNCTION imports_skeleton_free_of_characters();
