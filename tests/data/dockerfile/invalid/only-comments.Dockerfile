# one
# two
