FROM a
CMD	["a",	"b"]
CMD [
