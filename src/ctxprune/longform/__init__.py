"""Long-form transcription: Whisper's sequential algorithm with timestamps, VAD-batched windows, and the
subtitle and transcript writers."""
