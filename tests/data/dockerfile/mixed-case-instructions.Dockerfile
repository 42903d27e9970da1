FrOm busybox AS Base
RuN echo hi
EnV A=1
lAbEl k=v
