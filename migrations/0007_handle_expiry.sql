-- Provider handles that expire: Gemini's Files API forgets an upload after 48 h, fal's storage
-- after its own retention. The handle records when, and a use after that registers it again.
-- NULL (every handle before this migration, and Kling elements) means it never expires.
ALTER TABLE character_handles ADD COLUMN expires_at REAL;
