# one

# two

FROM a

# three
