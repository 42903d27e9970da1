FROM a
CMD ["tab\tnew\nline", "quote\"inside", "back\\slash", "slash\/"]
CMD ["\u00e9t\u00e9", "\ud83d\ude00", "日本"]
CMD ["\b\f\r"]
